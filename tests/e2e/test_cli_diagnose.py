"""The diagnosis from the outside: a real fixdnn process, real target interpreters, the JSON contract."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.envkit.cli import run_fixdnn
from tests.envkit.env import EnvBuilder, stray_cudnn


def fixdnn(args, environ, cwd=None):
    return run_fixdnn(args, environ, cwd=cwd, how="code")


def one_line_error(proc):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fixdnn: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_json_contract_for_a_broken_environment(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv").tensorflow_cuda12()
    environ["LD_LIBRARY_PATH"] = str(stray_cudnn(tmp_path / "old", "9.1.0"))
    proc = fixdnn(["--python", str(env.python), "--json"], environ)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["schema"] == "fixdnn.report/1"
    assert set(report["target"]) >= {"python", "python_version", "prefix", "kind"}
    assert report["target"]["kind"] == "venv" and report["target"]["prefix"] == str(env.prefix)
    tf = report["frameworks"][0]
    assert tf["name"] == "tensorflow" and tf["version"] == "2.20.0"
    assert set(tf["cudnn"]) >= {"required", "resolved_path", "resolved_version", "chain"}
    assert tf["cudnn"]["resolved_version"] == "9.1.0"
    assert any("LD_LIBRARY_PATH" in step for step in tf["cudnn"]["chain"])
    assert isinstance(report["libraries"], list) and report["driver"] is None
    mismatch = next(s for s in report["symptoms"] if s["name"] == "cudnn-version-mismatch")
    assert set(mismatch) >= {"code", "name", "severity", "summary", "evidence"}
    assert mismatch["code"] == "FDN102" and mismatch["severity"] == "error"


def test_healthy_environment_exits_0_and_says_so(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    env.add_torch("2.13.0+cpu", cuda=None)
    proc = fixdnn(["--python", str(env.python)], environ)
    assert proc.returncode == 0, proc.stderr
    assert "healthy: no problem found" in proc.stdout
    assert "torch 2.13.0+cpu" in proc.stdout


def test_text_report_shows_each_symptom_with_its_evidence(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv").torch_cuda13()
    (env.cudnn_lib / "libcudnn_graph.so.9").unlink()
    proc = fixdnn(["--python", str(env.python)], environ)
    assert proc.returncode == 1
    assert "error FDN105 cudnn-incomplete" in proc.stdout
    assert "libcudnn_graph.so.9: not found" in proc.stdout
    assert "fix:" in proc.stdout


@pytest.mark.parametrize("args, needle", [
    (["--python", "/nonexistent/python"], "--python /nonexistent/python: no such file"),
    (["--python", "/"], "--python /: not a file"),
    (["--prefix", "/nonexistent/env"], "--prefix /nonexistent/env: not a directory"),
    (["--root", "/nonexistent/root"], "--root /nonexistent/root: not a directory"),
    (["--bogus-option"], "No such option"),
])
def test_usage_errors_are_one_line_and_exit_2(args, needle, environ):
    assert needle in one_line_error(fixdnn(args, environ))


@pytest.mark.parametrize("make, option, needle", [
    (lambda d: "/etc/passwd", "--python", "not a Python interpreter"),  # not executable
    (lambda d: shutil.which("ls"), "--python", "not a Python interpreter"),  # runs, but is no Python
    (lambda d: _script(d, "#!/bin/sh\necho '{}'\n"), "--python", "not a Python interpreter"),  # exit 0, no probe JSON
    (lambda d: str(d), "--prefix", "not a Python environment"),  # an empty folder
    (lambda d: _script(d, "x") and str(d), "--prefix", "not a Python environment"),  # a folder of unrelated files
])
def test_a_target_that_is_not_a_python_environment_is_a_usage_error(tmp_path, environ, make, option, needle):
    target = make(tmp_path)
    line = one_line_error(fixdnn([option, target], environ))
    assert needle in line and target in line


def _script(folder, text):
    path = folder / "fake-python"
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def test_a_broken_venv_is_still_read_from_its_files_with_prefix(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv").torch_cuda13()
    (env.prefix / "bin/python").unlink()  # the base interpreter is gone
    proc = fixdnn(["--prefix", str(env.prefix), "--json"], environ)
    assert proc.returncode in (0, 1), proc.stderr
    assert json.loads(proc.stdout)["target"]["kind"] == "venv"


def test_facts_file_round_trip(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv").torch_cuda13()
    (env.cudnn_lib / "libcudnn_cnn.so.9").unlink()
    saved = fixdnn(["--python", str(env.python), "facts"], environ)
    assert saved.returncode == 0, saved.stderr
    path = tmp_path / "facts.json"
    path.write_text(saved.stdout)
    direct = json.loads(fixdnn(["--python", str(env.python), "--json"], environ).stdout)
    shutil.rmtree(env.prefix)  # the saved facts are enough: the environment is gone
    again = fixdnn(["--facts", str(path), "--json"], environ)
    assert again.returncode == 1
    assert json.loads(again.stdout)["symptoms"] == direct["symptoms"]


@pytest.mark.parametrize("content, needle", [
    ("not json", "not JSON"),
    ('{"schema": "something-else"}', "not a fixdnn facts file"),
    ('{"schema": "fixdnn.facts/1", "target": 3}', "TargetInfo"),
])
def test_malformed_facts_file(tmp_path, environ, content, needle):
    path = tmp_path / "facts.json"
    path.write_text(content)
    assert needle in one_line_error(fixdnn(["--facts", str(path)], environ))


def test_sys_path_origins_cwd_pythonpath_user_site(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    extra = tmp_path / "extra"
    extra.mkdir()
    environ["PYTHONPATH"] = str(extra)
    work = tmp_path / "work"
    work.mkdir()
    from tests.conftest import run_diagnosis

    old = os.getcwd()
    os.chdir(work)
    try:
        facts, _ = run_diagnosis(env.python, environ)
    finally:
        os.chdir(old)
    origins = dict(zip(facts.target.sys_path, facts.target.sys_path_origins))
    assert origins[str(work)] == "cwd" and facts.target.sys_path[0] == str(work)
    assert origins[str(extra)] == "pythonpath"
    assert origins[str(env.site)] == "site"
    assert facts.target.has_pip is False  # a venv without pip diagnoses fine


def test_user_site_is_reported_for_a_system_interpreter(tmp_path, environ):
    """A base interpreter puts an existing user site on sys.path (origin "user-site"); a venv does not."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    user_site = Path(environ["HOME"]) / f".local/lib/python{version}/site-packages"
    user_site.mkdir(parents=True)
    from tests.conftest import run_diagnosis

    base = os.path.realpath(getattr(sys, "_base_executable", sys.executable))  # not our venv's python
    facts, _ = run_diagnosis(base, environ)
    assert facts.target.user_site == str(user_site)
    assert facts.target.user_site_enabled is True
    index = facts.target.sys_path.index(str(user_site))
    assert facts.target.sys_path_origins[index] == "user-site"

    env = EnvBuilder(tmp_path / "venv")  # a real venv, nothing installed
    facts, _ = run_diagnosis(env.python, environ)
    assert facts.target.user_site_enabled is False and str(user_site) not in facts.target.sys_path


@pytest.mark.parametrize("version", ["3.8", "3.9"])
def test_probe_runs_in_old_target_interpreters(version, environ):
    candidates = [shutil.which(f"python{version}")] + sorted(
        str(p) for p in Path.home().glob(f".pyenv/versions/{version}.*/bin/python{version}"))
    python = next((c for c in reversed(candidates) if c), None)
    if python is None:
        pytest.skip(f"python{version} is not installed here")
    proc = subprocess.run([python, "-c", "print(1)"], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"python{version} shim is not usable here")
    proc = fixdnn(["--python", python, "--json"], environ)
    assert proc.returncode in (0, 1), proc.stderr
    assert json.loads(proc.stdout)["target"]["python_version"].startswith(version + ".")


def test_hostile_environment_path(tmp_path, environ):
    hostile = tmp_path / "we ird $HOME 'q' \"d\" `x` \n ünï"
    env = EnvBuilder(hostile).torch_cuda13()
    proc = fixdnn(["--python", str(env.python), "--json"], environ)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["target"]["prefix"] == str(hostile)
    assert report["frameworks"][0]["cudnn"]["resolved_path"] == str(env.cudnn_lib / "libcudnn.so.9")


def test_odd_inputs_become_unknown_facts_not_crashes(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv").torch_cuda13()
    bad = env.site / "broken-1.0.dist-info"
    bad.mkdir()
    (bad / "METADATA").write_text("this is not an email header\x00\xff")
    (env.site / "dangling-2.0.dist-info").symlink_to(tmp_path / "nowhere")
    (env.cudnn_lib / "libcudnn_ext.so.9").symlink_to(tmp_path / "nowhere.so")  # a broken symlink
    (env.cudnn_lib / "libcudnn_ops.so.9").write_bytes(b"\x7fELF\x02\x01\x01")  # a truncated ELF file
    ld = tmp_path / "ld dir"
    ld.mkdir()
    environ["LD_LIBRARY_PATH"] = f"{ld}:{tmp_path / 'missing'}"
    proc = fixdnn(["--python", str(env.python), "--json"], environ)
    assert "Traceback" not in proc.stderr and proc.returncode in (0, 1), proc.stderr
    report = json.loads(proc.stdout)
    reasons = {u["what"]: u["reason"] for u in report["unknowns"]}
    assert any("broken-1.0.dist-info" in what for what in reasons)
    ops = next(c for c in report["libraries"] if c["path"].endswith("libcudnn_ops.so.9"))
    assert ops["error"]


def test_files_only_target_under_root(tmp_path, environ):
    root = tmp_path / "image"
    env = EnvBuilder(root / "opt/venv", real_python=False)
    env.torch_cuda13()
    proc = fixdnn(["--root", str(root), "--prefix", "/opt/venv", "--json"], environ)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["target"]["kind"] == "venv" and report["target"]["python"] is None
    site = "/opt/venv/" + str(env.site.relative_to(root / "opt/venv"))
    assert report["frameworks"][0]["cudnn"]["resolved_path"] == f"{site}/nvidia/cudnn/lib/libcudnn.so.9"


def test_version_and_short_help(environ):
    from fixdnn import __version__

    version = fixdnn(["--version"], environ)
    assert version.returncode == 0 and version.stdout.strip() == f"fixdnn {__version__}"
    short = fixdnn(["-h"], environ)
    assert short.returncode == 0 and "Usage: fixdnn" in short.stdout and "--dry-run" in short.stdout


@pytest.mark.parametrize("how", ["ld_library_path_bare_copy", "ld_preload", "pip_target_on_pythonpath"])
def test_issue_11_breakages_exit_1_and_name_the_file(tmp_path, environ, how):
    """torch needs cuDNN 9.24; a 9.13 comes first in three ways the issue saw say "healthy": the CLI
    exits 1 and the JSON evidence names the file (and the sys.path entry when there is one)."""
    env = EnvBuilder(tmp_path / "venv").torch_cuda13()
    old = tmp_path / ("old-cudnn" if how == "ld_preload" else "old cudnn")  # ld.so splits LD_PRELOAD on spaces
    EnvBuilder(old, real_python=False).add_cudnn_wheel("9.13.0.50", 13, location=old, header=False,
                                                       dist=how == "pip_target_on_pythonpath")
    shim = old / "nvidia/cudnn/lib/libcudnn.so.9"
    if how == "ld_library_path_bare_copy":  # the wheel is gone; only the old lib/ files are reachable
        shutil.rmtree(env.cudnn_lib.parent)
        shutil.rmtree(next(env.site.glob("nvidia_cudnn_cu13-*.dist-info")))
        environ["LD_LIBRARY_PATH"] = str(shim.parent)
    elif how == "ld_preload":
        environ["LD_PRELOAD"] = str(shim)
    else:
        environ["PYTHONPATH"] = str(old)
    proc = fixdnn(["--python", str(env.python), "--json"], environ)
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    mismatch = next(s for s in report["symptoms"] if s["name"] == "cudnn-version-mismatch")
    assert mismatch["evidence"]["loaded"]["path"] == str(shim) and mismatch["evidence"]["loaded"]["version"] == "9.13.0"
    if how == "pip_target_on_pythonpath":
        assert mismatch["evidence"]["entry"] == {"index": 1, "path": str(old), "origin": "pythonpath"}
