"""conda-lock lockfiles: write (conda-meta + dist-info), read back with conda-lock, render with the real
conda-lock CLI, drift between a lockfile and a synthetic environment, its plan, third-party and malformed
lockfiles, and the message when the fixdnn[conda] extra is missing."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from fixdnn.facts import lockfile

if not lockfile.available():  # conda-lock's models, as fixdnn imports them (not its whole CLI)
    pytest.skip("conda-lock is not installed", allow_module_level=True)

from conda_lock.lockfile import parse_conda_lock_file, write_conda_lock_file  # noqa: E402
from conda_lock.lockfile.v1.models import HashModel, LockMeta  # noqa: E402
from conda_lock.lockfile.v2prelim.models import LockedDependency, Lockfile  # noqa: E402
from conda_lock.models.channel import Channel  # noqa: E402

from fixdnn.facts import (  # noqa: E402
    dumps,
    gather,
    loads_json,
    lockfile,  # noqa: E402
)
from fixdnn.repair import lockwrite  # noqa: E402
from fixdnn.knowledge import compat as compat_mod  # noqa: E402
from fixdnn.plan import context as context_mod  # noqa: E402
from fixdnn.plan.build import plan  # noqa: E402
from fixdnn.symptoms.registry import (
    diagnose,  # noqa: E402
    load_rules,
)
from fixdnn.target.host import Host  # noqa: E402
from fixdnn.target.interpreter import TargetSpec  # noqa: E402
from tests.envkit.env import EnvBuilder  # noqa: E402
from tests.envkit.machine import hermetic_environ  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONDA_LOCK = Path(sys.executable).parent / "conda-lock"  # the test extra's, next to the running Python
HOSTILE = "env with space 'q' $x é"
CHANNEL = "https://conda.example.invalid/conda-forge"  # .invalid: never resolvable
MD5 = {"cudnn": "a" * 32, "mkl": "b" * 32, "numpy": "c" * 32, "python": "d" * 32, "broken": None}


def conda_record(prefix: Path, name: str, version: str, build: str, *, md5: str | None = "", subdir="linux-64",
                 depends=(), url: bool = True) -> Path:
    md5 = MD5.get(name) if md5 == "" else md5
    fn = f"{name}-{version}-{build}.conda"
    record = {"name": name, "version": version, "build": build, "build_number": 0, "subdir": subdir,
              "channel": f"{CHANNEL}/{subdir}", "fn": fn, "depends": list(depends), "files": []}
    if url:
        record["url"] = f"{CHANNEL}/{subdir}/{fn}"
    if md5:
        record["md5"] = md5
        record["sha256"] = md5[:1] * 64
    path = prefix / "conda-meta" / f"{name}-{version}-{build}.json"
    path.write_text(json.dumps(record))
    return path


def direct_url(folder: Path, url: str, sha: str) -> None:
    (folder / "direct_url.json").write_text(json.dumps({"url": url, "archive_info": {"hashes": {"sha256": sha}}}))


@pytest.fixture
def env(tmp_path):
    """A venv that is also a conda prefix: conda records, conda-installed numpy, pip wheels."""
    e = EnvBuilder(tmp_path / HOSTILE, conda=True)
    conda_record(e.prefix, "python", "3.11.7", "h1_0_cpython")
    conda_record(e.prefix, "cudnn", "9.1.0.70", "h6b5d1c8_1", depends=["cuda-version >=12,<13", "__glibc >=2.17"])
    conda_record(e.prefix, "mkl", "2024.0.0", "ha957f24_49657", depends=["llvm-openmp >=17"])
    conda_record(e.prefix, "numpy", "1.26.4", "py311h64a7726_0", depends=["python >=3.11,<3.12.0a0", "mkl"])
    conda_record(e.prefix, "broken", "1.0", "0", md5=None)  # no md5: cannot be locked
    e.add_dist("numpy", "1.26.4", installer="conda")  # conda's own dist-info: locked as the conda package
    e.add_dist("torch", "2.14.1", requires=["nvidia-cudnn-cu13==9.24.0.43", 'sympy; extra == "dev"', "filelock"])
    e.add_dist("nvidia-cudnn-cu13", "9.24.0.43")
    e.add_dist("filelock", "3.13.1")
    wheel = e.add_dist("Cuda_Pathfinder", "1.0.0")
    direct_url(wheel, "file:///wheels/cuda_pathfinder-1.0.0-py3-none-any.whl", "e" * 64)
    return e


def facts_of(e, environ, lock=None):
    return gather(Host(environ=environ), TargetSpec(python=str(e.python)), lock=str(lock) if lock else None)


def drift_of(facts):
    return [s for s in diagnose(facts, compat_mod.load()) if s.name == "lockfile-drift"]


# -- writing and reading back ----------------------------------------------------------------------------
def test_round_trip_through_conda_locks_own_reader(env, environ, tmp_path):
    facts = facts_of(env, environ)
    out = tmp_path / "out dir" / "conda-lock.yml"
    out.parent.mkdir()
    got = lockwrite.write(out, Host(), facts)
    assert got.platform == "linux-64"
    back = parse_conda_lock_file(out)
    rows = {(d.manager, d.name): (d.version, d.build, d.url, d.hash.md5, d.hash.sha256, d.categories)
            for d in back.package}
    cudnn_url = f"{CHANNEL}/linux-64/cudnn-9.1.0.70-h6b5d1c8_1.conda"
    assert rows[("conda", "cudnn")] == ("9.1.0.70", "h6b5d1c8_1", cudnn_url, "a" * 32, "a" * 64, {"main"})
    assert rows[("conda", "numpy")][:2] == ("1.26.4", "py311h64a7726_0")
    assert ("pip", "numpy") not in rows  # conda installed it: its record is the entry
    assert ("conda", "broken") not in rows
    assert any("broken 1.0 0" in n and "md5" in n for n in got.notes)
    assert rows[("pip", "torch")] == ("2.14.1", None, "torch==2.14.1", None, None, {"main"})
    assert rows[("pip", "cuda-pathfinder")][2:5] == ("file:///wheels/cuda_pathfinder-1.0.0-py3-none-any.whl",
                                                      None, "e" * 64)
    assert any("pin 'name==version'" in n for n in got.notes)
    deps = {d.name: d.dependencies for d in back.package}
    assert deps["torch"] == {"filelock": "*", "nvidia-cudnn-cu13": "==9.24.0.43"}  # extras left out
    assert deps["cudnn"]["cuda-version"] == ">=12,<13"
    assert {str(c.url) for c in back.metadata.channels} == {CHANNEL}
    assert back.metadata.custom_metadata["prefix"] == str(env.prefix)
    # every package of the facts is there, once
    pip_names = {d.name for d in facts.distributions if d.installer != "conda"}
    conda_names = {p.name for p in facts.conda_packages} - {"broken"}
    assert {n for m, n in rows if m == "pip"} == pip_names
    assert {n for m, n in rows if m == "conda"} == conda_names
    # and fixdnn's own reader gives the same packages, as plain values
    lock = lockfile.read(out, "linux-64")
    assert {(p.manager, p.name, p.version, p.build) for p in lock.packages} == \
        {(m, n, v[0], v[1]) for (m, n), v in rows.items()}


def test_conda_lock_render_accepts_the_written_file(env, environ, tmp_path):
    out = tmp_path / "conda-lock.yml"
    lockwrite.write(out, Host(), facts_of(env, environ))
    for kind, made in (("explicit", "conda-linux-64.lock"), ("env", "conda-linux-64.lock.yml")):
        res = subprocess.run([str(CONDA_LOCK), "render", "-k", kind, "-p", "linux-64", str(out)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "HOME": str(tmp_path), "NO_PROXY": "*", "http_proxy": "http://127.0.0.1:9",
                                  "https_proxy": "http://127.0.0.1:9"})
        assert res.returncode == 0, res.stderr
        text = (tmp_path / made).read_text()
        if kind == "explicit":
            assert f"{CHANNEL}/linux-64/cudnn-9.1.0.70-h6b5d1c8_1.conda#{'a' * 32}" in text
            assert f"# pip cuda-pathfinder @ file:///wheels/cuda_pathfinder-1.0.0-py3-none-any.whl#sha256={'e' * 64}" in text
        else:
            assert "- cudnn=9.1.0.70=h6b5d1c8_1" in text and "- torch == 2.14.1" in text


def test_facts_with_a_lock_round_trip_as_json(env, environ, tmp_path):
    out = tmp_path / "conda-lock.yml"
    lockwrite.write(out, Host(), facts_of(env, environ))
    facts = facts_of(env, environ, out)
    assert facts.lock is not None and facts.lock.platform == "linux-64"
    assert "torch" in facts.lock.pip_patterns
    assert loads_json(dumps(facts)) == facts


# -- drift -------------------------------------------------------------------------------------------------
def test_fresh_lock_shows_no_drift_and_no_lock_checks_nothing(env, environ, tmp_path):
    out = tmp_path / "conda-lock.yml"
    lockwrite.write(out, Host(), facts_of(env, environ))
    assert drift_of(facts_of(env, environ, out)) == []
    assert facts_of(env, environ).lock is None


def test_drift_is_found_per_package_and_planned(env, environ, tmp_path):
    out = tmp_path / "conda-lock.yml"
    lockwrite.write(out, Host(), facts_of(env, environ))
    site = env.site
    # pip: cuDNN wheel upgraded; an OpenMP wheel added; an irrelevant package upgraded (ignored)
    import shutil

    shutil.rmtree(site / "nvidia_cudnn_cu13-9.24.0.43.dist-info")
    env.add_dist("nvidia-cudnn-cu13", "9.26.0.1")
    env.add_dist("intel-openmp", "2024.2.0")
    shutil.rmtree(site / "filelock-3.13.1.dist-info")
    env.add_dist("filelock", "3.16.0")
    # conda: cuDNN rebuilt at another version, MKL removed
    next((env.prefix / "conda-meta").glob("cudnn-*.json")).unlink()
    conda_record(env.prefix, "cudnn", "9.3.0.75", "h3f0b7a2_0")
    next((env.prefix / "conda-meta").glob("mkl-*.json")).unlink()

    facts = facts_of(env, environ, out)
    found = {s.evidence["name"]: s for s in drift_of(facts)}
    assert set(found) == {"nvidia-cudnn-cu13", "intel-openmp", "cudnn", "mkl"}
    assert all(s.code == "FDN501" and s.severity == "error" for s in found.values())
    ev = found["nvidia-cudnn-cu13"].evidence
    assert (ev["manager"], ev["change"], ev["locked_version"], ev["installed_version"]) == \
        ("pip", "changed", "9.24.0.43", "9.26.0.1")
    assert ev["pin"] == "nvidia-cudnn-cu13==9.24.0.43"
    assert found["intel-openmp"].evidence["change"] == "extra"
    assert found["intel-openmp"].evidence["locked_version"] is None
    cudnn = found["cudnn"].evidence
    assert (cudnn["locked_build"], cudnn["installed_build"]) == ("h6b5d1c8_1", "h3f0b7a2_0")
    assert cudnn["conda_command"] == f"conda install -p {shlex.quote(str(env.prefix))} cudnn=9.1.0.70=h6b5d1c8_1"
    assert shlex.split(cudnn["conda_command"])[3] == str(env.prefix)  # the hostile prefix survives the shell
    assert found["mkl"].evidence["change"] == "missing"
    assert found["mkl"].evidence["installed_version"] is None

    # the plan restores the locked state
    ctx = replace(context_mod.build(facts, None), installer="pip", installer_argv=(str(env.python), "-m", "pip"))
    p = plan(drift_of(facts), ctx, load_rules(include_user=False), compat_mod.load())
    by = {(a.kind, a.packages or a.text) for a in p.actions}
    assert ("pip-install", ("nvidia-cudnn-cu13==9.24.0.43",)) in by
    assert ("pip-uninstall", ("intel-openmp",)) in by
    installs = [a for a in p.actions if a.kind == "pip-install"]
    assert all("--no-deps" in a.pip_args for a in installs)
    manual = [a.text for a in p.actions if a.kind == "manual"]
    assert any(cudnn["conda_command"] in t for t in manual)
    assert any("conda install -p" in t and "mkl=2024.0.0=ha957f24_49657" in t for t in manual)
    assert p.unfixed == ()

    # offline without a wheel folder: the pip steps become manual, with the pin
    p_off = plan(drift_of(facts), replace(ctx, offline=True), load_rules(include_user=False), compat_mod.load())
    assert not any(a.kind == "pip-install" for a in p_off.actions)
    assert any(a.kind == "manual" and "nvidia-cudnn-cu13" in a.text for a in p_off.actions)


def test_drift_ignores_optional_categories_when_missing(env, environ, tmp_path):
    out = tmp_path / "third-party.yml"
    write_third_party(out, extra_dev=True)
    facts = facts_of(env, environ, out)
    names = {s.evidence["name"]: s.evidence["change"] for s in drift_of(facts)}
    assert "jaxlib" not in names  # dev-only, not installed: fine
    assert names["torch"] == "changed"  # locked 2.5.1, installed 2.14.1


# -- lockfiles from elsewhere ------------------------------------------------------------------------------
def write_third_party(path: Path, *, extra_dev: bool = False) -> None:
    """A lockfile made with conda-lock's models the way a third party (or conda-lock itself) makes one."""
    deps = []
    for platform in ("linux-64", "osx-arm64"):
        deps.append(LockedDependency(
            name="cudnn", version="9.1.0.70", manager="conda", platform=platform,
            url=f"{CHANNEL}/{platform}/cudnn-9.1.0.70-h6b5d1c8_1.conda", hash=HashModel(md5="a" * 32),
            build="h6b5d1c8_1", categories={"main"}))
        deps.append(LockedDependency(
            name="torch", version="2.5.1", manager="pip", platform=platform,
            url="file:///wheels/torch-2.5.1-cp311-cp311-linux_x86_64.whl", hash=HashModel(sha256="f" * 64),
            categories={"main"}))
        if extra_dev:
            deps.append(LockedDependency(
                name="jaxlib", version="0.4.30", manager="pip", platform=platform,
                url="file:///wheels/jaxlib-0.4.30-cp311-cp311-linux_x86_64.whl", hash=HashModel(sha256="0" * 64),
                categories={"dev"}))
    lf = Lockfile(package=deps, metadata=LockMeta(
        content_hash={"linux-64": "1" * 64, "osx-arm64": "2" * 64}, channels=[Channel.from_string(CHANNEL)],
        platforms=["linux-64", "osx-arm64"], sources=["environment.yml"]))
    write_conda_lock_file(lf, path, metadata_choices=None, include_help_text=True)


def test_lockfile_written_by_conda_lock_models_is_read(tmp_path):
    path = tmp_path / "conda-lock.yml"
    write_third_party(path, extra_dev=True)
    lock = lockfile.read(path, "linux-64")
    rows = {(p.manager, p.name): (p.version, p.build, p.optional) for p in lock.packages}
    assert rows == {("conda", "cudnn"): ("9.1.0.70", "h6b5d1c8_1", False), ("pip", "torch"): ("2.5.1", None, False),
                    ("pip", "jaxlib"): ("0.4.30", None, True)}
    with pytest.raises(lockfile.LockfileError, match="locks linux-64, osx-arm64, not the target's linux-aarch64"):
        lockfile.read(path, "linux-aarch64")
    with pytest.raises(lockfile.LockfileError, match="cannot tell which"):
        lockfile.read(path, None)


HAND_WRITTEN_V1 = """\
# This lock file was generated by conda-lock (https://github.com/conda/conda-lock). DO NOT EDIT!
version: 1
metadata:
  content_hash:
    linux-64: 4f0c5d0a0b2f1c6e1b1e2b7f0c4d5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f
  channels:
  - url: conda-forge
    used_env_vars: []
  platforms:
  - linux-64
  sources:
  - environment.yml
package:
- name: _openmp_mutex
  version: '4.5'
  manager: conda
  platform: linux-64
  dependencies:
    llvm-openmp: '>=9.0.1'
  url: https://conda.example.invalid/conda-forge/linux-64/_openmp_mutex-4.5-2_kmp_llvm.tar.bz2
  hash:
    md5: 562b26ba2e19059551a811e72ab7f793
    sha256: 84a66275da3a66e3f611e3e7bc1a6f4c1cd4bba6e19d5c1c6d6d3d9e5d1d4c3b
  category: main
  optional: false
- name: llvm-openmp
  version: 18.1.8
  manager: conda
  platform: linux-64
  dependencies: {}
  url: https://conda.example.invalid/conda-forge/linux-64/llvm-openmp-18.1.8-hf5423f3_0.conda
  hash:
    md5: 322be9d39e030673e105b0abb320514e
    sha256: 1f2b7c1b7f3c5a6e5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e
  category: main
  optional: false
- name: mkl
  version: 2024.2.2
  manager: conda
  platform: linux-64
  dependencies:
    llvm-openmp: '>=18.1.8'
  url: https://conda.example.invalid/conda-forge/linux-64/mkl-2024.2.2-ha957f24_16.conda
  hash:
    md5: 18d7f7b1d4ff2f86b4b5b8b3e45fa6f1
    sha256: 77906b0acead8f86b489da46f53916e624897338770dbf70b04b8f673c9273c1
  category: main
  optional: false
- name: nvidia-cudnn-cu12
  version: 9.1.0.70
  manager: pip
  platform: linux-64
  dependencies:
    nvidia-cublas-cu12: '*'
  url: file:///wheels/nvidia_cudnn_cu12-9.1.0.70-py3-none-manylinux2014_x86_64.whl
  hash:
    sha256: 165764f44ef8c61fcdfdfdbe769d687e06374059fbb388b6c89ecb0e28793a6f
  category: main
  optional: false
"""


def test_hand_written_v1_lockfile_is_read(tmp_path):
    path = tmp_path / "conda-lock.yml"
    path.write_text(HAND_WRITTEN_V1)
    lock = lockfile.read(path, "linux-64")
    rows = {(p.manager, p.name): (p.version, p.build, p.md5) for p in lock.packages}
    assert rows[("conda", "mkl")] == ("2024.2.2", None, "18d7f7b1d4ff2f86b4b5b8b3e45fa6f1")
    assert rows[("pip", "nvidia-cudnn-cu12")][0] == "9.1.0.70"
    assert len(rows) == 4


def test_drift_against_a_hand_written_lock(env, environ, tmp_path):
    path = tmp_path / "conda-lock.yml"
    path.write_text(HAND_WRITTEN_V1)
    found = {s.evidence["name"]: s.evidence for s in drift_of(facts_of(env, environ, path))}
    assert found["mkl"]["change"] == "changed" and found["mkl"]["installed_version"] == "2024.0.0"
    assert found["mkl"]["locked_build"] is None  # no build key in the lock: the version decides
    assert found["nvidia-cudnn-cu12"]["change"] == "missing"
    assert found["nvidia-cudnn-cu13"]["change"] == "extra" and found["cudnn"]["change"] == "extra"
    assert found["cudnn"]["conda_command"].startswith("conda remove -p ")


# -- malformed lockfiles -------------------------------------------------------------------------------
MALFORMED = {
    "not-yaml": ("version: 1\npackage: [unclosed\n", "invalid YAML at line"),
    "binary": (b"\xff\xfe\x00garbage", "not UTF-8"),
    "a-list": ("- 1\n- 2\n", "expected a mapping"),
    "no-version": ("metadata: {}\npackage: []\n", "no 'version' key"),
    "wrong-version": ("version: 7\nmetadata: {}\npackage: []\n", "unsupported lockfile version 7"),
    "missing-field": (HAND_WRITTEN_V1.replace("  url: file:///wheels/nvidia_cudnn_cu12", "  uurl: x"),
                      "invalid lockfile: package.3"),
    "conda-without-md5": (HAND_WRITTEN_V1.replace("    md5: 18d7f7b1d4ff2f86b4b5b8b3e45fa6f1\n", ""),
                          "conda package hashes must use MD5"),
    "no-metadata": ("version: 1\npackage: []\n", "invalid lockfile: metadata"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_lockfile_is_one_line(case, tmp_path):
    content, expect = MALFORMED[case]
    path = tmp_path / f"{case} 'q'.yml"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(lockfile.LockfileError) as info:
        lockfile.read(path, "linux-64")
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path)) and expect in msg, msg


def test_missing_lockfile(tmp_path):
    with pytest.raises(lockfile.LockfileError, match="no such lockfile"):
        lockfile.read(tmp_path / "nope.yml")


@pytest.mark.parametrize("case", ["not-yaml", "wrong-version", "missing-field"])
def test_cli_malformed_lockfile_exits_2_with_one_line(case, env, environ, tmp_path, capsys):
    from fixdnn.cli import main

    content, expect = MALFORMED[case]
    path = tmp_path / "bad.yml"
    path.write_text(content)
    code = main(["--python", str(env.python), "--lock", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith(f"fixdnn: --lock {path}: ") and expect in err, err


# -- without the extra ---------------------------------------------------------------------------------
BLOCKER = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "conda_lock" or name.startswith("conda_lock."):
            raise ImportError("blocked for the test: " + name)
sys.meta_path.insert(0, Block())
from fixdnn.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("args", [["lock", "-o", "{tmp}/out.yml"], ["--lock", "{tmp}/any.yml"],
                                  ["--lock", "{tmp}/any.yml", "--json"]])
def test_without_conda_lock_says_how_to_install_it(args, env, tmp_path):
    (tmp_path / "any.yml").write_text(HAND_WRITTEN_V1)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    res = subprocess.run([sys.executable, "-c", BLOCKER, "--python", str(env.python), *argv],
                         capture_output=True, text=True, cwd=str(ROOT), timeout=120,
                         env=hermetic_environ(tmp_path, PYTHONPATH=str(ROOT)))
    assert res.returncode == 2, res.stderr
    # the install command is the one for this fixdnn's own installation (tests/unit/test_selfinstall.py)
    from fixdnn.cli.selfinstall import hint

    assert res.stderr == f"fixdnn: conda-lock is not installed (lockfiles need fixdnn's conda extra): {hint()}\n"
    assert not (tmp_path / "out.yml").exists()


def test_symptom_module_does_not_import_conda_lock():
    code = ("import sys; from fixdnn.symptoms.registry import load_all; load_all(); "
            "import fixdnn.facts.lockfile; print('conda_lock' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT),
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.stdout.strip() == "False", res.stderr


def test_reading_a_lockfile_does_not_import_conda_locks_command_line(tmp_path):
    """conda-lock's package ``__init__`` imports its whole CLI (0.45 s more per ``--lock``); fixdnn reads the
    lockfile models only, and the package still answers what its ``__init__`` defines when asked."""
    (tmp_path / "lock.yml").write_text(HAND_WRITTEN_V1)
    code = ("import sys; from fixdnn.facts import lockfile; lockfile.parse(sys.argv[1]); "
            "print('conda_lock.conda_lock' in sys.modules); import conda_lock; "
            "print(conda_lock.__version__ != 'unknown', callable(conda_lock.main))")
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "lock.yml")], capture_output=True, text=True,
                         cwd=str(ROOT), env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert res.stdout.split() == ["False", "True", "True"], res.stderr
