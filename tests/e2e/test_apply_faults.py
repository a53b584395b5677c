"""Crash (SIGKILL) apply at every step boundary and at random points inside pip, then roll back:
the environment must be byte-identical (sha256, modes, symlinks) to before, with no fixdnn leftover in
it and no process of the transaction still alive. Also a crash mid-rollback. The user's state folder
sits on the environment's filesystem, or on another one (/dev/shm): a few points by default, every
point with FIXDNN_TEST_BIG_MATRIX=1."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.test_apply_kit import apply_in_child, cli_env, copy_venv, index_dir, leftovers, run_py, tree

PLAN = [
    {"kind": "pip-install", "packages": ["nvidia-cudnn-cu12==9.3.0.75", "cudnn-tool==2.0"]},
    {"kind": "path-prepend", "name": "LD_LIBRARY_PATH", "value": "/opt/cudnn 9/lib"},
    {"kind": "write-file", "path": "{prefix}/etc/fixdnn/notes.txt", "content": "written by a test\n"},
]
BOUNDARIES = ["0:begin", "1:intent", "1:stash", "1:done", "2:intent", "2:done", "3:intent", "3:done", "0:end"]
# Kill points inside pip: a fresh seed each run (tests/conftest.py prints it in the header; set
# FIXDNN_TEST_SEED=N to replay a run), and a different point for each item. The window is the time pip takes
# here to install the two tiny wheels (about 0.5 s on a quiet machine, more on a loaded one): a later point
# kills right after pip exits, which the "1:done" boundary already covers. Six points a run by default,
# twenty-four with FIXDNN_TEST_BIG_MATRIX=1; over runs the seeds cover the whole window.
SEED = int(os.environ["FIXDNN_TEST_SEED"])
PIP_WINDOW = (0.02, 0.8)


def pip_delay(item: int) -> float:
    return round(random.Random(f"{SEED}:{item}").uniform(*PIP_WINDOW), 3)


def _plan(prefix):
    return [{**a, "path": a["path"].format(prefix=prefix)} if "path" in a else a for a in PLAN]


BIG = bool(os.environ.get("FIXDNN_TEST_BIG_MATRIX"))
PIP_POINTS = 24 if BIG else 6
# The state folder on another filesystem changes how stashes move (copy, not rename): the boundaries where
# a stash exists (1:stash) and where every step is done (0:end), and one point inside pip.
OTHER_FS_BOUNDARIES = BOUNDARIES if BIG else ["1:stash", "0:end"]
OTHER_FS_PIP = range(PIP_POINTS) if BIG else range(1)


def _alive_in(prefix: Path) -> list[str]:
    """Processes (other than this one) whose command line names the environment: a pip or a helper
    the crashed transaction left running."""
    needle = os.fsencode(str(prefix))
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read()
            with open(f"/proc/{pid}/stat", "rb") as fh:
                zombie = fh.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except OSError:
            continue
        if needle in cmd and not zombie:
            shown = cmd.replace(b"\0", b" ").decode(errors="replace")[:120]
            found.append(f"{pid}: {shown}")
    return found


def _crash_then_rollback(tmp_path, crash: str, rollback_crash: str | None = None, state: Path | None = None):
    prefix = copy_venv(tmp_path / "env 'x'")
    temp = tmp_path / "temp"  # the temp folder of every process of the transaction
    temp.mkdir()
    env = cli_env(state or tmp_path / "state", index_dir(), TMPDIR=str(temp))
    before = tree(prefix)
    proc = apply_in_child(prefix, _plan(prefix), {**env, "FIXDNN_TEST_CRASH_AT": crash})
    # Every crash point must fire: an apply that finishes (exit 0) means the hook never ran.
    assert proc.returncode == -signal.SIGKILL, f"crash at {crash} did not happen: exit {proc.returncode}\n{proc.stderr}"
    code = f"from fixdnn.repair.transaction import rollback; print(rollback({str(prefix)!r})[1])"
    if rollback_crash:
        first = run_py(code, {**env, "FIXDNN_TEST_CRASH_AT": rollback_crash})
        assert first.returncode == -signal.SIGKILL, first.stderr
    back = run_py(code, env)
    assert back.returncode == 0, back.stderr
    after = tree(prefix)
    diff = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not diff, f"crash at {crash}: differs: {diff[:8]}"
    assert leftovers(prefix) == [], f"crash at {crash}: fixdnn left files in the environment"
    # pip's own temporary files may outlive a killed pip (pip-unpack-...); fixdnn's must not outlive fixdnn
    assert [n for n in os.listdir(temp) if "fixdnn" in n] == [], f"crash at {crash}: fixdnn left files in {temp}"
    deadline = time.monotonic() + 10  # the detached discarder of the stash may still be exiting
    while _alive_in(prefix) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _alive_in(prefix) == [], f"crash at {crash}: processes outlived the transaction"


@pytest.mark.parametrize("crash", BOUNDARIES)
def test_crash_at_step_boundary(tmp_path, crash):
    _crash_then_rollback(tmp_path, crash)


@pytest.mark.parametrize("item", range(PIP_POINTS))
def test_crash_inside_pip(tmp_path, item):
    delay = pip_delay(item)
    print(f"FIXDNN_TEST_SEED={SEED}: item {item} kills pip after {delay} s")
    _crash_then_rollback(tmp_path, f"1:pip:{delay}")


@pytest.mark.parametrize("where", ["undo:3", "undo:2", "undo:1"])
def test_crash_during_rollback_then_rerun(tmp_path, where):
    _crash_then_rollback(tmp_path, "0:end", rollback_crash=where)


@pytest.mark.parametrize("crash", OTHER_FS_BOUNDARIES)
def test_crash_at_step_boundary_state_on_another_filesystem(tmp_path, other_filesystem, crash):
    _crash_then_rollback(tmp_path, crash, state=other_filesystem)


@pytest.mark.parametrize("item", OTHER_FS_PIP)
def test_crash_inside_pip_state_on_another_filesystem(tmp_path, other_filesystem, item):
    delay = pip_delay(100 + item)
    print(f"FIXDNN_TEST_SEED={SEED}: item {100 + item} kills pip after {delay} s (state on another filesystem)")
    _crash_then_rollback(tmp_path, f"1:pip:{delay}", state=other_filesystem)
