"""fixdnn run -- COMMAND: the activation scripts' environment, output and exit code passed through, and
an explanation when the command fails with a known message."""

from __future__ import annotations

import signal
import sys

from fixdnn.shell.envfile import EnvFile, EnvOp
from fixdnn.shell.run import run_command
from tests.envkit.cli import run_fixdnn
from tests.envkit.machine import hermetic_environ


def _prefix(tmp_path, ops=()):
    prefix = tmp_path / "env 'q' $x ü"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "pyvenv.cfg").write_text("home = /usr/bin\n")  # a venv: --prefix must name an environment
    path = EnvFile.path_for(prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    EnvFile(tuple(ops)).dump(path)
    return prefix


def _run(args, tmp_path, **extra):
    environ = hermetic_environ(tmp_path, PATH="/usr/bin:/bin", **extra)
    return run_fixdnn(args, environ, how="script")


def test_repairs_applied_output_and_exit_code_passed_through(tmp_path):
    lib = str(tmp_path / "good lib")
    prefix = _prefix(tmp_path, [EnvOp("unset", "KMP_DUPLICATE_LIB_OK", reason="folklore"),
                                EnvOp("path-prepend", "LD_LIBRARY_PATH", lib),
                                EnvOp("path-remove", "LD_LIBRARY_PATH", "/stale/cudnn"),
                                EnvOp("set", "MKL_THREADING_LAYER", "GNU")])
    script = 'echo "LD=$LD_LIBRARY_PATH"; echo "KMP=${KMP_DUPLICATE_LIB_OK-unset}"; echo "MKL=$MKL_THREADING_LAYER"; ' \
             'echo to-stderr >&2; exit 7'
    proc = _run(["--prefix", str(prefix), "run", "--", "sh", "-c", script], tmp_path,
                LD_LIBRARY_PATH="/stale/cudnn:/other", KMP_DUPLICATE_LIB_OK="TRUE")
    assert proc.returncode == 7
    assert proc.stdout.splitlines() == [f"LD={lib}:/other", "KMP=unset", "MKL=GNU"]
    assert proc.stderr == "to-stderr\n"  # nothing recognised: no explanation added


def test_failure_with_a_known_message_is_explained(tmp_path):
    prefix = _prefix(tmp_path)
    script = ('echo "Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN when one '
              'has already been registered" >&2; echo "noise" >&2; '
              'echo "ImportError: libcudnn.so.9: cannot open shared object file: No such file or directory" >&2; exit 1')
    proc = _run(["--prefix", str(prefix), "run", "--", "sh", "-c", script], tmp_path)
    assert proc.returncode == 1
    head, _, explanation = proc.stderr.partition("fixdnn: the command failed (exit 1)")
    assert "ImportError: libcudnn.so.9" in head  # the command's own stderr came first, unchanged
    assert "E16 (line 3)" in explanation and "this error means" in explanation
    assert "E10 (line 1)" in explanation and "harmless" in explanation


def test_success_is_not_explained_even_with_noise(tmp_path):
    prefix = _prefix(tmp_path)
    proc = _run(["--prefix", str(prefix), "run", "--", "sh", "-c", "echo 'DNN library is not found' >&2"], tmp_path)
    assert proc.returncode == 0 and "fixdnn:" not in proc.stderr


def test_signal_and_missing_command(tmp_path):
    prefix = _prefix(tmp_path)
    proc = _run(["--prefix", str(prefix), "run", "--", "sh", "-c",
                 "echo 'Invalid handle. Cannot load symbol cudnnGetVersion' >&2; kill -ABRT $$"], tmp_path)
    assert proc.returncode == 128 + signal.SIGABRT
    assert "E21" in proc.stderr
    missing = _run(["--prefix", str(prefix), "run", "--", "no-such-command-xyz", "--flag"], tmp_path)
    assert missing.returncode == 127 and missing.stderr.strip() == \
        "fixdnn: no-such-command-xyz: command not found (searched the environment's bin/, then PATH)"
    empty = _run(["--prefix", str(prefix), "run"], tmp_path)
    assert empty.returncode == 2 and "no command" in empty.stderr


def test_bad_env_toml_is_one_line(tmp_path):
    prefix = _prefix(tmp_path)
    EnvFile.path_for(prefix).write_text("[[op]]\nname = 'X'\n")
    proc = _run(["--prefix", str(prefix), "run", "--", "true"], tmp_path)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "unknown key" in proc.stderr


def test_stderr_tail_is_bounded_and_streamed():
    chunks = []
    outcome = run_command([sys.executable, "-c", "import sys\nfor i in range(2000): sys.stderr.write('x' * 99 + '\\n')\n"
                           "sys.stderr.write('OMP: Error #15: last line\\n'); sys.exit(3)"],
                          {"PATH": "/usr/bin:/bin"}, sink=chunks.append, tail_bytes=4096)
    assert outcome.returncode == 3
    assert len(b"".join(chunks)) == 2000 * 100 + len("OMP: Error #15: last line\n")
    assert len(outcome.stderr_tail) == 4096 and outcome.stderr_tail.endswith("OMP: Error #15: last line\n")
