"""`fixdnn --dry-run` end to end: the plan is shown, pins are checked against a local index on 127.0.0.1
(pip in the target, or the index's JSON API for a target without pip), and nothing changes: the whole
environment and fixdnn's state directory hash the same before and after."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from pathlib import Path

import pytest

from tests.e2e.test_apply_kit import copy_venv
from tests.envkit.cli import run_fixdnn
from tests.envkit.env import EnvBuilder, stray_cudnn
from tests.envkit.index import LocalIndex, pip_env

PIN = "nvidia-cudnn-cu13==9.24.0.43"


def tree_hash(root: Path) -> str:
    """Names, modes, link targets and contents of every entry under root (missing root hashes as such)."""
    h = hashlib.sha256()
    if not root.exists():
        return "absent"
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            st = p.lstat()
            h.update(f"{p.relative_to(root)}\0{st.st_mode}\0".encode())
            if p.is_symlink():
                h.update(os.readlink(p).encode())
            elif p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    with LocalIndex(tmp_path_factory.mktemp("index")) as idx:
        idx.add("nvidia-cudnn-cu13", "9.24.0.43", libs={"nvidia/cudnn/lib/libcudnn.so.9": "libcudnn.so.9"},
                tag="py3-none-manylinux_2_27_x86_64")
        yield idx


@pytest.fixture(scope="module")
def pip_venv(tmp_path_factory):
    """A venv with a real pip (created once), holding a torch cu13 stub whose cuDNN wheel is missing."""
    prefix = copy_venv(tmp_path_factory.mktemp("with pip $x") / "venv", "bare-pip")  # ensurepip: 3 s, a copy 0.2 s
    env = EnvBuilder(prefix)
    env.add_torch()
    env.add_cuda_wheels(13)
    return env


def run(args, tmp_path, **env_extra):
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = pip_env({"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}, HOME=str(home),
                  XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"),
                  PYTHONPATH=str(Path(__file__).resolve().parents[2]), **env_extra)
    return run_fixdnn(args, env, timeout=300)


def _config(tmp_path, url: str) -> str:
    cfg = tmp_path / "pip.conf"
    cfg.write_text(f"[global]\nindex-url = {url}\n")
    return str(cfg)


def test_available_pin_is_runnable_and_nothing_changes(pip_venv, index, tmp_path):
    (tmp_path / "state" / "fixdnn").mkdir(parents=True)
    # A cold --dry-run: not even the integrity hash cache may be written to the state dir.
    before = (tree_hash(pip_venv.prefix), tree_hash(tmp_path / "state"))
    proc = run(["--python", str(pip_venv.python), "--dry-run", "--json"], tmp_path,
               PIP_CONFIG_FILE=_config(tmp_path, index.url))
    assert proc.returncode == 1, proc.stderr  # the diagnosis still reports the error
    data = json.loads(proc.stdout)
    plan = data["plan"]
    [step] = [a for a in plan["actions"] if "cudnn-missing" in a["fixes"]]
    assert step["kind"] == "pip-install" and step["command"].endswith(f"--only-binary=:all: {PIN}")
    assert step["available"] is True and "pip install --dry-run" in step["check"], step
    assert step["hashes"] and step["hashes"][0].startswith(f"{PIN} sha256:")
    assert plan["runnable"] is True
    assert any(r.startswith("/simple/nvidia-cudnn-cu13") for r in index.requests)
    assert (tree_hash(pip_venv.prefix), tree_hash(tmp_path / "state")) == before


def test_missing_pin_is_reported_unavailable(pip_venv, tmp_path):
    with LocalIndex(tmp_path / "empty") as empty:
        empty.add("nvidia-cudnn-cu13", "9.13.0.50")  # another version only
        proc = run(["--python", str(pip_venv.python), "--dry-run", "--json"], tmp_path,
                   PIP_CONFIG_FILE=_config(tmp_path, empty.url))
        text = run(["--python", str(pip_venv.python), "--dry-run"], tmp_path,
                   PIP_CONFIG_FILE=_config(tmp_path, empty.url))
    plan = json.loads(proc.stdout)["plan"]
    # The pin cannot be had: the planner falls to the next remedy in the rule file (here the manual step)
    # and says why the pin was passed over.
    assert not [a for a in plan["actions"] if a["kind"] == "pip-install"]
    [why] = [x["status"] for x in plan["alternatives"] if x["remedy"] == "cudnn-missing.framework-pin"]
    assert why.startswith(f"unavailable: {PIN}: ") and "no matching wheel" in why
    assert [a["remedy"] for a in plan["actions"]] == ["cudnn-missing.manual"]
    assert "cudnn-missing.framework-pin: unavailable" in text.stdout


def test_target_without_pip_is_driven_by_fixdnns_pip_and_the_json_api(index, tmp_path):
    env = EnvBuilder(tmp_path / "no pip")
    env.add_torch()
    env.add_cuda_wheels(13)
    proc = run(["--python", str(env.python), "--dry-run", "--json"], tmp_path, PIP_INDEX_URL=index.url)
    plan = json.loads(proc.stdout)["plan"]
    # The target has no pip: the target's interpreter runs fixdnn's own pip (as apply does), and the pin is
    # checked that way.
    [step] = [a for a in plan["actions"] if a["kind"] == "pip-install"]
    assert step["available"] is True, step
    python, runner, *rest = shlex.split(step["command"])
    assert python == str(env.python) and runner.endswith("/pip/__pip-runner__.py") and rest[0] == "install"
    # Without any installer (e.g. under --root), the configured index's JSON API answers instead.
    from fixdnn.plan.availability import check_with_index
    from fixdnn.plan.context import Context, PipConfig

    ctx = Context(installer="none", pip=PipConfig(index_url=index.url))
    got = check_with_index(ctx, [PIN, "nvidia-cudnn-cu13==9.99.0.1"])
    assert got[PIN][0] is True and "JSON API" in got[PIN][1] and got[PIN][2]
    assert got["nvidia-cudnn-cu13==9.99.0.1"][0] is False
    offline = check_with_index(Context(installer="none", offline=True, pip=PipConfig(index_url=index.url)), [PIN])
    assert offline[PIN][0] is None and "--offline" in offline[PIN][1]
    local = check_with_index(Context(installer="none", offline=True, pip=PipConfig(find_links=(str(index.wheels),))), [PIN])
    assert local[PIN][0] is True


def test_env_actions_show_the_activation_diff_without_writing(tmp_path):
    env = EnvBuilder(tmp_path / "tf env").tensorflow_cuda12()
    old = stray_cudnn(tmp_path / "old 'cudnn' $HOME", "9.1.0")
    (tmp_path / "state").mkdir()
    before = (tree_hash(env.prefix), tree_hash(tmp_path / "state"))
    proc = run(["--python", str(env.python), "--dry-run", "--offline", "--json"], tmp_path,
               LD_LIBRARY_PATH=str(old))
    plan = json.loads(proc.stdout)["plan"]
    [step] = plan["actions"]
    assert (step["kind"], step["name"], step["value"]) == ("path-remove", "LD_LIBRARY_PATH", str(old))
    files = {Path(f["path"]).relative_to(env.prefix).as_posix(): f["diff"] for f in plan["files"]}
    assert {"etc/fixdnn/env.toml", "etc/fixdnn/env.sh", "bin/activate"} <= set(files)
    assert 'op = "path-remove"' in files["etc/fixdnn/env.toml"] and "cudnn-version-mismatch" in files["etc/fixdnn/env.toml"]
    assert "+# >>> fixdnn" in files["bin/activate"]
    text = run(["--python", str(env.python), "--dry-run", "--offline"], tmp_path, LD_LIBRARY_PATH=str(old))
    assert "remove" in text.stdout and "fixes: cudnn-version-mismatch" in text.stdout
    assert (tree_hash(env.prefix), tree_hash(tmp_path / "state")) == before
    assert not (env.prefix / "etc" / "fixdnn").exists()


def test_no_remedy_prints_no_automatic_fix(tmp_path):
    rules = tmp_path / "rules" / "remedies"
    rules.mkdir(parents=True)
    env = EnvBuilder(tmp_path / "venv")
    env.add_torch()
    env.add_cudnn_wheel("9.26.0.51", 13)
    env.add_cuda_wheels(13)
    proc = run(["--python", str(env.python), "--dry-run", "--offline"], tmp_path)
    assert "no automatic fix for cudnn-pin-mismatch" in proc.stdout, proc.stdout + proc.stderr
