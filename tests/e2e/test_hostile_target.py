"""A target that fights back: code planted where fixdnn looks, interpreters that hang or lie, FIFOs.
Diagnosis runs nothing of the environment, never hangs, and answers one line (exit 2) or a verdict."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.envkit.cli import run_fixdnn
from tests.envkit.env import EnvBuilder

ROOT = Path(__file__).resolve().parents[2]


def fixdnn(args, environ, cwd=None, timeout=120):
    # -I: fixdnn's own imports never come from the cwd either
    return run_fixdnn(args, environ, cwd=cwd, timeout=timeout, how="isolated")


def one_line_error(proc):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fixdnn: "), proc.stderr
    return lines[0]


def _planter(marker: Path) -> str:
    return f"open({str(marker)!r}, 'a').write('ran\\n')\n"


def test_modules_in_the_working_folder_do_not_run(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv").torch_cuda13()
    work = tmp_path / "work"
    (work / "pip").mkdir(parents=True)
    marker = tmp_path / "ran"
    for name in ("json.py", "site.py", "sysconfig.py", "platform.py", "pip/__init__.py", "pip/__main__.py"):
        (work / name).write_text(_planter(marker))
    proc = fixdnn(["--python", str(env.python), "--json"], environ, cwd=work)
    assert proc.returncode in (0, 1), proc.stderr
    assert not marker.exists(), "a module of the working folder ran"
    report = json.loads(proc.stdout)
    assert report["target"]["prefix"] == str(env.prefix)


def test_pth_import_lines_and_sitecustomize_are_reported_not_run(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv").torch_cuda13()
    marker = tmp_path / "ran"
    extra = tmp_path / "extra path"
    extra.mkdir()
    (env.site / "evil.pth").write_text(f"{extra}\nimport os; {_planter(marker).strip()}\n# a comment\n")
    (env.site / "sitecustomize.py").write_text(_planter(marker))
    proc = fixdnn(["--python", str(env.python), "--json"], environ)
    assert proc.returncode in (0, 1), proc.stderr
    assert not marker.exists(), "startup code of the environment ran during diagnosis"
    startup = json.loads(proc.stdout)["target"]["startup_code"]
    assert any(line.startswith(f"{env.site / 'evil.pth'}:2: import os;") for line in startup), startup
    assert any("sitecustomize" in line for line in startup), startup
    facts = fixdnn(["--python", str(env.python), "facts", "--json"], environ)
    target = json.loads(facts.stdout)["target"] if facts.returncode == 0 else None
    if target is not None:  # the .pth path entry is still modelled (read as text)
        assert str(extra) in target["sys_path"], target["sys_path"]
    text = fixdnn(["--python", str(env.python)], environ)
    assert "evil.pth:2" in text.stdout and not marker.exists()


def test_sys_path_matches_what_a_plain_python_builds(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv").torch_cuda13()
    (tmp_path / "extra").mkdir()
    (env.site / "a.pth").write_text(f"{tmp_path / 'extra'}\n")
    (env.site / "b.pth").write_text(f"import sys; sys.path.insert(0, {str(tmp_path / 'first')!r})\n")
    environ["PYTHONPATH"] = str(tmp_path / "pp")
    (tmp_path / "pp").mkdir()
    from fixdnn.target.host import Host
    from fixdnn.target.interpreter import probe

    data, why = probe(Host(environ=environ), str(env.python))
    assert why is None
    real = subprocess.run([str(env.python), "-c", "import sys, json; print(json.dumps(sys.path))"],
                          capture_output=True, text=True, env=environ, cwd=tmp_path, check=True)
    expected = list(dict.fromkeys(os.path.abspath(p) if p else str(tmp_path) for p in json.loads(real.stdout)))
    assert data["sys_path"][1:] == expected[1:], (data["sys_path"], expected)  # [0]: the caller's folder, given to the probe
    assert data["sys_path_origins"][:3] == ["cwd", "pth", "pythonpath"] and data["sys_path_origins"][-1] == "pth"


def _fake_python(tmp_path: Path, body: str, mode: int = 0o755) -> Path:
    path = tmp_path / "fake" / "bin" / "python"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    os.chmod(path, mode)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_hanging_interpreter_is_killed_with_its_children(tmp_path, environ):
    pids = tmp_path / "pids"
    python = _fake_python(tmp_path, f"#!/bin/sh\necho $$ >> '{pids}'\nsleep 300 &\necho $! >> '{pids}'\nwait\n")
    environ["FIXDNN_PROBE_TIMEOUT"] = "1"
    start = time.monotonic()
    line = one_line_error(fixdnn(["--python", str(python)], environ, timeout=60))
    assert time.monotonic() - start < 30
    assert "did not answer within 1 s" in line and str(python) in line
    deadline = time.monotonic() + 5
    left = [int(p) for p in pids.read_text().split()]
    while any(_alive(p) for p in left) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [p for p in left if _alive(p)]
    for p in alive:
        os.kill(p, signal.SIGKILL)
    assert not alive, "the probe's processes outlived fixdnn"


@pytest.mark.parametrize("body,expect", [
    ("#!/bin/sh\necho hello\n", "not the probe's JSON"),
    ("#!/bin/sh\necho '[1, 2]'\n", "wrong shape (a JSON list"),
    ("#!/bin/sh\necho '{\"python\": 5}'\n", "wrong shape"),
    ("#!/bin/sh\nexit 3\n", "failed"),
    ("\x7fNOT an ELF at all\n", "failed"),
])
def test_interpreter_that_lies_gets_one_line(tmp_path, environ, body, expect):
    python = _fake_python(tmp_path, body)
    line = one_line_error(fixdnn(["--python", str(python)], environ))
    assert expect in line, line


def test_probe_json_with_wrong_types_is_refused(tmp_path, environ):
    from fixdnn.target import interpreter

    src = interpreter._probe_source()
    good = subprocess.run([sys.executable, "-I", "-S", "-c", src, "/"], capture_output=True, text=True,
                          check=True).stdout
    data = json.loads(good)
    for key, bad in (("sys_path", "/usr/lib"), ("has_pip", "yes"), ("site_dirs", [1]), ("executes", [3])):
        python = _fake_python(tmp_path, f"#!/bin/sh\ncat <<'EOF'\n{json.dumps({**data, key: bad})}\nEOF\n")
        line = one_line_error(fixdnn(["--python", str(python)], environ))
        assert "wrong shape" in line and key in line, line


def test_not_executable_interpreter_gets_one_line(tmp_path, environ):
    python = _fake_python(tmp_path, "#!/bin/sh\necho hi\n", mode=0o644)
    line = one_line_error(fixdnn(["--python", str(python)], environ))
    assert "Permission denied" in line or "failed" in line, line


def _fifo_instead_of(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


def test_fifo_named_metadata_never_hangs(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv").torch_cuda13()
    metadata = next(env.site.glob("torch-*.dist-info")) / "METADATA"
    _fifo_instead_of(metadata)
    proc = fixdnn(["--python", str(env.python), "--json"], environ, timeout=60)
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    assert any("not a regular file (a FIFO)" in u["reason"] for u in report["unknowns"])
    assert proc.returncode == 1 and "verdict-unknown" in [s["name"] for s in report["symptoms"]]


def test_torch_metadata_without_version_is_not_healthy(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv").torch_cuda13(cudnn="9.1.0.70")  # a cuDNN too old for this torch
    metadata = next(env.site.glob("torch-*.dist-info")) / "METADATA"
    metadata.write_text("".join(ln + "\n" for ln in metadata.read_text().splitlines()
                                if not ln.startswith("Version:")))
    proc = fixdnn(["--python", str(env.python), "--json"], environ)
    names = [s["name"] for s in json.loads(proc.stdout)["symptoms"]]
    assert proc.returncode == 1 and "verdict-unknown" in names, (names, proc.stderr)


def test_unreadable_site_packages_is_not_healthy(tmp_path, environ):
    if os.geteuid() == 0:
        pytest.skip("root reads a mode-000 folder anyway")
    env = EnvBuilder(tmp_path / "venv").torch_cuda13()
    os.chmod(env.site, 0)
    try:
        proc = fixdnn(["--python", str(env.python), "--json"], environ)
    finally:
        os.chmod(env.site, 0o755)
    names = [s["name"] for s in json.loads(proc.stdout)["symptoms"]]
    assert proc.returncode == 1 and "verdict-unknown" in names, (names, proc.stderr)


def test_fifo_named_cudnn_version_header_never_hangs(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv").torch_cuda13()
    _fifo_instead_of(env.cudnn_lib.parent / "include" / "cudnn_version.h")
    proc = fixdnn(["--python", str(env.python), "--json"], environ, timeout=60)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr


def test_a_path_with_a_newline_stays_one_line(tmp_path, environ):
    bad = str(tmp_path / "no\nsuch env")
    for args in (["--prefix", bad], ["--python", bad], ["--prefix", bad, "rollback"]):
        line = one_line_error(fixdnn(args, environ))
        assert "no\\nsuch env" in line, line
