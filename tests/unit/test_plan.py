"""The planner: each symptom found in a synthetic environment (EnvBuilder) gives the expected plan; the plan
is ordered, de-duplicated and conflict-free; refusals (non-exact pins, relative paths) are noted."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pip

from fixdnn.knowledge import compat as compat_mod
from fixdnn.plan import context as context_mod
from fixdnn.plan.build import plan
from fixdnn.symptoms.registry import Symptom, load_rules
from tests.conftest import run_diagnosis
from tests.envkit.elfkit import build_so
from tests.envkit.env import EnvBuilder, stray_cudnn

RULES = load_rules(include_user=False)
COMPAT = compat_mod.load()


def plan_for(python, environ, *, online=True, **over):
    facts, symptoms = run_diagnosis(python, environ)
    ctx = context_mod.build(facts, None, compat=COMPAT)
    if online:  # EnvBuilder venvs have no pip: pretend the target has one (the e2e tests use a real one)
        ctx = replace(ctx, installer="pip", installer_argv=(str(python), "-m", "pip"))
    ctx = replace(ctx, **over)
    return facts, symptoms, plan(symptoms, ctx, RULES, COMPAT)


def for_symptom(p, name):
    return [a for a in p.actions if name in a.fixes]


def test_healthy_environment_plans_nothing_but_a_note(torch_env, environ):
    _, symptoms, p = plan_for(torch_env.python, environ)
    assert p.actions == () and p.unfixed == ()
    assert any("driver-missing: informational" in n for n in p.notes)


def test_cudnn_missing_installs_the_framework_pin(torch_env, environ):
    shutil.rmtree(torch_env.cudnn_lib.parent)
    shutil.rmtree(next(torch_env.site.glob("nvidia_cudnn_cu13-*.dist-info")))
    _, _, p = plan_for(torch_env.python, environ)
    [a] = for_symptom(p, "cudnn-missing")
    assert a.kind == "pip-install" and a.packages == ("nvidia-cudnn-cu13==9.24.0.43",)
    assert a.pip_args[0] == "--only-binary=:all:" and a.remedy == "cudnn-missing.framework-pin"
    assert "preferred over cudnn-missing.tensorflow-and-cuda" in a.reason
    assert a.command(str(torch_env.python)).endswith("install --only-binary=:all: nvidia-cudnn-cu13==9.24.0.43")


def test_cudnn_missing_offline_is_a_manual_step(torch_env, environ):
    shutil.rmtree(torch_env.cudnn_lib.parent)
    shutil.rmtree(next(torch_env.site.glob("nvidia_cudnn_cu13-*.dist-info")))
    _, _, p = plan_for(torch_env.python, environ, offline=True)
    [a] = for_symptom(p, "cudnn-missing")
    assert a.kind == "manual" and "cuDNN 9" in a.text
    assert "not cudnn-missing.framework-pin (no installer can fetch wheels" in a.reason
    assert p.actions[-1].kind == "manual"


def test_version_mismatch_from_ld_library_path_is_removed_from_it(tf_env, environ, tmp_path):
    old = stray_cudnn(tmp_path / "old cudnn", "9.1.0")
    environ["LD_LIBRARY_PATH"] = str(old)
    _, _, p = plan_for(tf_env.python, environ)
    [a] = for_symptom(p, "cudnn-version-mismatch")
    assert (a.kind, a.name, a.value) == ("path-remove", "LD_LIBRARY_PATH", str(old))


def test_version_mismatch_without_a_usable_copy_uses_tensorflow_and_cuda(tf_env, environ):
    shutil.rmtree(tf_env.cudnn_lib.parent)
    shutil.rmtree(next(tf_env.site.glob("nvidia_cudnn_cu12-*.dist-info")))
    tf_env.add_cudnn_wheel("9.1.0.70", 12)
    _, symptoms, p = plan_for(tf_env.python, environ)
    [a] = for_symptom(p, "cudnn-version-mismatch")
    assert a.packages == ("tensorflow[and-cuda]==2.20.0",)


def test_shadowed_by_pythonpath_removes_the_entry(torch_env, environ, tmp_path):
    other = EnvBuilder(tmp_path / "other", real_python=False)
    other.add_cudnn_wheel("9.13.0.50", 13, dist=False)
    environ["PYTHONPATH"] = str(other.site)
    _, _, p = plan_for(torch_env.python, environ)
    shadow = for_symptom(p, "cudnn-shadowed")
    assert [(a.kind, a.name, a.value) for a in shadow] == [("path-remove", "PYTHONPATH", str(other.site))]
    # torch's pinned cuDNN is installed, only shadowed: the mismatch is fixed by the same removal, never by
    # reinstalling the pin that is already there (issue 11 item 3).
    assert for_symptom(p, "cudnn-version-mismatch") == shadow
    assert [a.kind for a in p.actions] == ["path-remove"]


def test_shadowed_by_current_directory_is_manual(torch_env, environ, tmp_path, monkeypatch):
    workdir = tmp_path / "project"
    EnvBuilder(workdir, real_python=False).add_cudnn_wheel("9.26.0.51", 13, location=workdir, dist=False)
    monkeypatch.chdir(workdir)
    _, _, p = plan_for(torch_env.python, environ)
    [a] = for_symptom(p, "cudnn-shadowed")
    assert a.kind == "manual" and str(workdir) in a.text


def test_pin_mismatch_installs_the_pin(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    env.add_torch()
    env.add_cudnn_wheel("9.26.0.51", 13)
    env.add_cuda_wheels(13)
    _, _, p = plan_for(env.python, environ)
    [a] = for_symptom(p, "cudnn-pin-mismatch")
    assert a.packages == ("nvidia-cudnn-cu13==9.24.0.43",)
    _, _, p = plan_for(env.python, environ, offline=True)
    assert p.unfixed == ("cudnn-pin-mismatch",) and p.actions == ()


def test_incomplete_reinstalls_whole(torch_env, environ):
    (torch_env.cudnn_lib / "libcudnn_cnn.so.9").unlink()
    _, _, p = plan_for(torch_env.python, environ)
    [a] = for_symptom(p, "cudnn-incomplete")
    assert a.packages == ("nvidia-cudnn-cu13==9.24.0.43",) and "--force-reinstall" in a.pip_args


def test_not_on_search_path_offline_prepends_the_copy(tf_env, environ, tmp_path):
    shutil.rmtree(tf_env.cudnn_lib.parent)
    root = tmp_path / "tar ball"
    stray_cudnn(root, "9.5.0")
    environ["CUDNN_PATH"] = str(root)
    _, _, online = plan_for(tf_env.python, environ)
    assert for_symptom(online, "cudnn-not-on-search-path")[0].packages == ("tensorflow[and-cuda]==2.20.0",)
    _, _, offline = plan_for(tf_env.python, environ, offline=True)
    [a, pre] = for_symptom(offline, "cudnn-not-on-search-path")
    assert (a.kind, a.name, a.value) == ("path-prepend", "LD_LIBRARY_PATH", str(root / "lib"))
    # the same copy also reaches processes that never source the activation scripts
    assert (pre.kind, pre.path) == ("preload", str(root / "lib/libcudnn.so.9"))


def test_wheel_collision_and_cuda_runtime_missing(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    env.add_tensorflow()
    env.add_cudnn_wheel("9.3.0.75", 12)
    env.add_cuda_wheels(12, "12.5.82", skip=("cudart",))
    env.add_dist("nvidia-cudnn-cu13", "9.24.0.43", [])
    _, _, p = plan_for(env.python, environ)
    assert for_symptom(p, "cudnn-wheel-collision")[0].kind == "manual"
    [a] = for_symptom(p, "cuda-runtime-missing")
    assert a.packages == ("tensorflow[and-cuda]==2.20.0",)


def test_cuda_runtime_mismatch_is_explained(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    env.add_torch()
    env.add_cudnn_wheel()
    env.add_cuda_wheels(13, skip=("cudart",))
    bad = tmp_path / "hand made"
    build_so(bad / "libcudart.so.12.8.0", "libcudart.so.12")
    (bad / "libcudart.so.13").symlink_to("libcudart.so.12.8.0")
    environ["LD_LIBRARY_PATH"] = str(bad)
    _, symptoms, p = plan_for(env.python, environ)
    [a] = for_symptom(p, "cuda-runtime-mismatch")
    assert a.kind == "manual" and str(bad) in a.text


def test_framework_pins_conflict_offers_alternatives(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    env.torch_cuda13()
    env.add_tensorflow("2.15.0", cuda="12.2", cudnn_major=8,
                       requires=['nvidia-cudnn-cu12==8.9.4.25; extra == "and-cuda"'])
    _, _, p = plan_for(env.python, environ)
    [a] = for_symptom(p, "framework-pins-conflict")
    assert a.kind == "manual" and "cannot share one environment" in a.text and "own environment" in a.text
    assert "tensorflow 2.2" in a.text or "tensorflow 2.1" in a.text  # TF releases built for cuDNN 9


def test_driver_too_old_is_manual_and_last():
    s = [Symptom("FDN121", "driver-too-old", "error", "x", {"framework": "torch", "driver": "535.1",
                                                            "minimum": "580.65.06", "cuda": "13.0"}),
         Symptom("FDN103", "cudnn-pin-mismatch", "warning", "y", {"framework": "torch", "distribution": "nvidia-cudnn-cu13",
                                                                  "pinned": "9.24.0.43", "installed": "9.26", "location": "/e"})]
    p = plan(s, context_mod.from_dict({}), RULES, COMPAT)
    assert [a.kind for a in p.actions] == ["pip-install", "manual"]
    assert "580.65.06" in p.actions[-1].text


# -- combining ------------------------------------------------------------------------------------------
def _ctx(**kw):
    return context_mod.from_dict(kw)


def test_duplicates_merge_their_fixes():
    ev = {"framework": "torch", "distribution": "nvidia-cudnn-cu13", "pinned": "9.24.0.43", "installed": "9.1",
          "location": "/e"}
    ev2 = {"framework": "torch", "shim": "/e/libcudnn.so.9", "missing": ["libcudnn_cnn.so.9"], "versions": {}}
    s = [Symptom("FDN103", "cudnn-pin-mismatch", "warning", "", ev), Symptom("FDN105", "cudnn-incomplete", "error", "", ev2)]
    p = plan(s, _ctx(frameworks={"torch": {"cudnn_pin": "nvidia-cudnn-cu13==9.24.0.43"}}), RULES, COMPAT)
    # The same pin once: the error's step (with --force-reinstall) also fixes the warning.
    assert [a.fixes for a in p.actions] == [("cudnn-incomplete", "cudnn-pin-mismatch")]
    assert "--force-reinstall" in p.actions[0].pip_args
    s = [Symptom("FDN103", "cudnn-pin-mismatch", "warning", "", ev), Symptom("FDN103", "cudnn-pin-mismatch", "warning", "", ev)]
    p = plan(s, _ctx(), RULES, COMPAT)
    assert len(p.actions) == 1


def test_conflicting_pins_keep_the_framework_pin():
    a = {"framework": "torch", "distribution": "nvidia-cudnn-cu13", "pinned": "9.26.0.51", "installed": "9.1", "location": "/e"}
    b = dict(a, pinned="9.24.0.43")
    s = [Symptom("FDN103", "cudnn-pin-mismatch", "warning", "", a), Symptom("FDN103", "cudnn-pin-mismatch", "warning", "", b)]
    p = plan(s, _ctx(pins={"nvidia-cudnn-cu13": "9.24.0.43"}), RULES, COMPAT)
    assert [x.packages for x in p.actions] == [("nvidia-cudnn-cu13==9.24.0.43",)]
    assert any("nvidia-cudnn-cu13==9.26.0.51" in n and "framework's own pin" in n for n in p.notes)


def test_contradicting_path_actions_keep_the_first():
    mism = {"framework": "tensorflow", "needs": {"major": 9, "minimum": "9.3"},
            "loaded": {"path": "/opt/c/lib/libcudnn.so.9", "version": "9.5.0", "found_in": ["ld.so.cache"]},
            "usable_copies": [{"path": "/opt/d/lib/libcudnn.so.9", "version": "9.5.0"}]}
    missing_dir = {"variable": "LD_LIBRARY_PATH", "index": 0, "entry": "/opt/d/lib", "exists": False}
    s = [Symptom("FDN102", "cudnn-version-mismatch", "error", "", mism),
         Symptom("FDN301", "ld-library-path-missing-dir", "warning", "", missing_dir)]
    p = plan(s, _ctx(offline=True), RULES, COMPAT)
    assert [(a.kind, a.value or a.path) for a in p.actions] == [("path-prepend", "/opt/d/lib"),
                                                                ("preload", "/opt/d/lib/libcudnn.so.9")]
    assert any("contradicts" in n for n in p.notes)


def test_unknown_symptom_is_unfixed_and_order_is_uninstall_install_env_manual():
    p = plan([Symptom("FDN999", "no-such-thing", "error", "", {})], _ctx(), RULES, COMPAT)
    assert p.unfixed == ("no-such-thing",) and p.actions == ()
    from fixdnn.plan.build import _ORDER

    kinds = sorted(["manual", "env-set", "pip-install", "path-prepend", "pip-uninstall", "write-file"], key=_ORDER.get)
    assert kinds == ["pip-uninstall", "pip-install", "path-prepend", "env-set", "write-file", "manual"]


def test_a_range_pin_is_refused_when_rendered():
    """A framework pin that is not exact (a user rule, a new metadata shape) never reaches pip."""
    ev = {"framework": "torch", "needs": {"major": 9}, "soname": "libcudnn.so.9", "other_copies": []}
    p = plan([Symptom("FDN101", "cudnn-missing", "error", "", ev)],
             _ctx(frameworks={"torch": {"cudnn_pin": "nvidia-cudnn-cu13>=9.24"}}), RULES, COMPAT)
    assert p.actions[0].kind == "manual"
    assert any("exact pins only" in n for n in p.notes)


def _pip_world(tmp_path, machine):
    """pip configuration in every place pip reads: global (the planted machine), user, site, PIP_CONFIG_FILE."""
    home, prefix = tmp_path / "home", tmp_path / "env"
    (home / ".config/pip").mkdir(parents=True)
    prefix.mkdir()
    machine.write("/etc/xdg/pip/pip.conf", "[global]\nindex-url = https://mirror.invalid/simple\n"
                  "find-links = /glob al\ncert = /etc/ca.pem\n")
    (home / ".config/pip/pip.conf").write_text("[global]\nextra-index-url =\n  http://127.0.0.1:2/a\n"
                                               "  http://127.0.0.1:3/b\n[install]\nindex-url = http://127.0.0.1:1/simple/\n")
    (prefix / "pip.conf").write_text("[global]\nfind-links = /w h\n")
    environ = {"HOME": str(home), "PIP_NO_INDEX": "true", "PIP_VERSION": "ignored"}
    return environ, prefix


def test_pip_config_is_read_from_every_file_with_pips_precedence(tmp_path, machine):
    from fixdnn.target.host import Host

    environ, prefix = _pip_world(tmp_path, machine)
    cfg = context_mod.read_pip_config(Host(environ=environ, system=machine.root), "pip", str(prefix))
    assert cfg.index_url == "http://127.0.0.1:1/simple/"  # [install] beats [global]
    assert cfg.extra_index_urls == ("http://127.0.0.1:2/a", "http://127.0.0.1:3/b")
    # the site file beats the global one; pip splits every multi-valued option on whitespace (cli/parser.py,
    # action "append"): a find-links folder with a space in its name is two folders to pip, and so to the plan.
    assert cfg.find_links == ("/w", "h")
    assert cfg.no_index is True and cfg.cert == "/etc/ca.pem"
    assert str(prefix / "pip.conf") in cfg.source
    # PIP_CONFIG_FILE=/dev/null: no file at all; an existing PIP_CONFIG_FILE: no user file
    bare = context_mod.read_pip_config(Host(environ={**environ, "PIP_CONFIG_FILE": "/dev/null"},
                                            system=machine.root), "pip", str(prefix))
    assert (bare.index_url, bare.find_links, bare.no_index) == (None, (), True)
    own = tmp_path / "own.conf"
    own.write_text("[global]\nextra-index-url = http://127.0.0.1:4/c\n")
    chosen = context_mod.read_pip_config(Host(environ={**environ, "PIP_CONFIG_FILE": str(own)},
                                              system=machine.root), "pip", str(prefix))
    assert chosen.index_url == "https://mirror.invalid/simple" and chosen.extra_index_urls == ("http://127.0.0.1:4/c",)


def test_pip_config_read_here_is_what_pip_config_list_says(tmp_path, machine):
    """The reader against real pip, on one set of files: fixdnn's pip, run in a pip-less target as apply runs
    it. XDG_CONFIG_DIRS points both at the planted global folder; /etc/pip.conf, which pip always reads, is
    read by both from this machine (system="/"), so they agree whatever it holds."""
    import subprocess
    import venv as venv_mod

    from fixdnn.facts import pipconf
    from fixdnn.target import ownpip
    from fixdnn.target.host import Host

    environ, prefix = _pip_world(tmp_path, machine)
    venv_mod.EnvBuilder(with_pip=False, symlinks=True).create(prefix)
    (prefix / "pip.conf").write_text("[global]\nfind-links = /w h\n[install]\nno-binary = :none:\n")
    for extra in ({}, {"PIP_CONFIG_FILE": str(prefix / "pip.conf")}, {"PIP_CONFIG_FILE": "/dev/null"}):
        env = {"PATH": "/usr/bin:/bin", "XDG_CONFIG_DIRS": str(machine.root / "etc/xdg"), **environ, **extra}
        argv = ownpip.argv_for(str(prefix / "bin/python"))
        res = subprocess.run([*argv, "config", "list"], env=env, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        theirs = {}
        for line in res.stdout.splitlines():
            key, _, value = line.partition("=")
            section, _, name = key.rpartition(".")
            theirs.setdefault(name, {})[section] = value.strip().strip("'")
        mine = pipconf.read(Host(environ=env, system="/"), str(prefix)).values
        normalised = {k: {s: " ".join(v.split()) for s, v in d.items()} for k, d in mine.items()}
        assert normalised == {k: {s: " ".join(v.replace("\\n", " ").split()) for s, v in d.items()}
                              for k, d in theirs.items()}, (extra, res.stdout)


def test_a_write_outside_the_environment_is_said_in_the_plan(tmp_path):
    layer = tmp_path / "layer"
    (layer / "remedies").mkdir(parents=True)
    (layer / "remedies" / "mine.toml").write_text('''[[remedy]]
id = "cudnn-wheel-collision.my-notes"
symptom = "cudnn-wheel-collision"
reason = "keep a note"
actions = [{ kind = "write-file", path = "{location}/../NOTES.txt", content = "two cuDNN wheels" },
           { kind = "write-file", path = "/etc/fixdnn-notes.txt", content = "two cuDNN wheels" }]

[[remedy.case]]
evidence = { location = "/env/lib/python3.11/site-packages", distributions = [] }
expect = [{ kind = "write-file" }, { kind = "write-file" }]
''')
    rules = load_rules([layer], include_user=False)
    ev = {"location": "/env/lib/python3.11/site-packages", "distributions": []}
    p = plan([Symptom("FDN107", "cudnn-wheel-collision", "warning", "", ev)], _ctx(prefix="/env"), rules, COMPAT)
    assert {a.path for a in p.actions} == {"/env/lib/python3.11/site-packages/../NOTES.txt", "/etc/fixdnn-notes.txt"}
    outside = [n for n in p.notes if n.startswith("outside the environment")]
    assert outside == ["outside the environment: cudnn-wheel-collision.my-notes writes /etc/fixdnn-notes.txt"]


def test_a_target_pip_too_old_for_dry_run_is_replaced_by_fixdnns_own(torch_env, environ):
    """pip < 22.2 has no `install --dry-run --report`: fixdnn's own pip drives the target (its runner file, run
    by the target's interpreter: what `pip --python` itself runs, minus one pip start-up)."""
    from fixdnn.target.host import Host

    (torch_env.site / "pip").mkdir()
    (torch_env.site / "pip" / "__init__.py").write_text("__version__ = '20.0.2'\n")
    torch_env.add_dist("pip", "20.0.2", ["pip/__init__.py"])
    facts, _ = run_diagnosis(torch_env.python, environ)
    assert facts.target.has_pip is True
    ctx = context_mod.build(facts, Host(environ=environ), compat=COMPAT)
    assert ctx.installer == "pip"
    python, runner = ctx.installer_argv
    assert python == str(torch_env.python)
    assert Path(runner).name == "__pip-runner__.py" and Path(runner).parent == Path(pip.__file__).parent


def test_a_pip_without_its_runner_file_is_run_with_python_option(monkeypatch):
    import sys

    from fixdnn.target import ownpip

    monkeypatch.setattr(ownpip, "runner", lambda: None)
    assert ownpip.argv_for("/env/bin/python") == (sys.executable, "-m", "pip", "--python", "/env/bin/python")


def test_each_change_says_where_it_lives_and_what_it_reaches():
    from fixdnn.model.actions import Action

    from fixdnn.plan.reach import EVERY_PYTHON, reach, unreached

    prepend = Action("path-prepend", ("x",), name="LD_LIBRARY_PATH", value="/opt/c/lib")
    places = {r.where: r for r in reach(prepend, kernelspecs=2)}
    assert set(places) == {"activation", "in-process", "kernelspec"}
    assert places["in-process"].reaches == "" and "child processes" in places["in-process"].note
    assert "2 Jupyter kernelspec" in places["kernelspec"].reaches
    assert [r.reaches for r in reach(Action("preload", ("x",), path="/opt/c/lib/libcudnn.so.9"))] == [EVERY_PYTHON]
    unset = Action("env-unset", ("y",), name="KMP_DUPLICATE_LIB_OK")
    assert {r.where: bool(r.reaches) for r in reach(unset, 1)} == {"activation": True, "in-process": True,
                                                                   "kernelspec": False}
    assert len(unreached(unset, 1)) == 1 and reach(Action("manual", text="x")) == []


def test_boolean_pip_options_read_as_pips_strtobool():
    from fixdnn.facts import pipconf
    from fixdnn.plan.context import _pip_config

    for text in ("1", "true", "T", "yes", "Y", "on"):
        assert pipconf.truthy(text) and _pip_config({"no-index": {"global": text}}, "t").no_index, text
    for text in ("0", "false", "no", "off", "", None):
        assert not pipconf.truthy(text), text
