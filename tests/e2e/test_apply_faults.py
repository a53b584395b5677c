"""Crash (SIGKILL) apply at every step boundary and at random points inside pip, then roll back:
the environment must be byte-identical (sha256, modes, symlinks) to before. Also a crash mid-rollback."""

from __future__ import annotations

import os
import random
import signal

import pytest

from tests.e2e.test_apply_kit import apply_in_child, cli_env, copy_venv, index_dir, run_py, tree

PLAN = [
    {"kind": "pip-install", "packages": ["nvidia-cudnn-cu12==9.3.0.75", "cudnn-tool==2.0"]},
    {"kind": "path-prepend", "name": "LD_LIBRARY_PATH", "value": "/opt/cudnn 9/lib"},
    {"kind": "write-file", "path": "{prefix}/etc/fixdnn/notes.txt", "content": "written by a test\n"},
]
BOUNDARIES = ["0:begin", "1:intent", "1:stash", "1:done", "2:intent", "2:done", "3:intent", "3:done", "0:end"]
# Kill points inside pip: a fresh seed each run (tests/conftest.py prints it in the header; set
# FIXDNN_TEST_SEED=N to replay a run), and a different point for each item.
SEED = int(os.environ["FIXDNN_TEST_SEED"])
PIP_POINTS = 12


def pip_delay(item: int) -> float:
    return round(random.Random(f"{SEED}:{item}").uniform(0.02, 1.3), 3)


def _plan(prefix):
    return [{**a, "path": a["path"].format(prefix=prefix)} if "path" in a else a for a in PLAN]


def _crash_then_rollback(tmp_path, crash: str, rollback_crash: str | None = None):
    prefix = copy_venv(tmp_path / "env 'x'")
    env = cli_env(tmp_path / "state", index_dir())
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
