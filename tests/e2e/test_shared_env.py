"""One environment, several fixdnn runs that do not share a HOME (two users of a shared env, sudo, CI):
the journal and lock are found from the environment itself, files other distributions own are restored,
and nothing of fixdnn is left in the environment. Real venvs, real pip from a local folder index."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_apply_kit import (
    ROOT,
    apply_in_child,
    build_wheel,
    cli_env,
    copy_venv,
    index_dir,
    leftovers,
    pip_into,
    run_py,
    site_of,
    tree,
)
from tests.envkit.cli import argv_for, run_fixdnn

PIN93 = {"kind": "pip-install", "packages": ["nvidia-cudnn-cu12==9.3.0.75"]}
ROLLBACK = "from fixdnn.repair.transaction import rollback; r, n = rollback({prefix!r}); print(r.id, n)"
HISTORY = "import json; from fixdnn.repair.apply import history; print(json.dumps(history({prefix!r})))"


def _as(state: Path, index: Path, **extra: str) -> dict[str, str]:
    """The environment of one user: their own HOME and state folder."""
    home = state / "home"
    home.mkdir(parents=True, exist_ok=True)
    return cli_env(state, index, HOME=str(home), **extra)


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_two_users_see_one_journal_and_roll_back_in_order(tmp_path):
    prefix = copy_venv(tmp_path / "shared env")
    index = index_dir()
    alice, bob = _as(tmp_path / "alice", index), _as(tmp_path / "bob", index)
    before = tree(prefix)
    first = json.loads(_ok(apply_in_child(prefix, [PIN93], alice)))
    assert first["outcome"] == "applied"
    middle = tree(prefix)
    # bob, with another HOME and state folder, sees alice's transaction ...
    seen = json.loads(_ok(run_py(HISTORY.format(prefix=str(prefix)), bob)))
    assert [t["id"] for t in seen] == [first["id"]]
    second = json.loads(_ok(apply_in_child(prefix, [{"kind": "env-set", "name": "CUDNN_LOGINFO_DBG",
                                                      "value": "1"}], bob)))
    assert second["outcome"] == "applied"
    # ... and alice's rollback undoes the newest first, whoever made it: nothing of the wheel is lost
    assert _ok(run_py(ROLLBACK.format(prefix=str(prefix)), alice)).split() == [second["id"], "1"]
    assert tree(prefix) == middle
    assert _ok(run_py(ROLLBACK.format(prefix=str(prefix)), bob)).split() == [first["id"], "1"]
    assert tree(prefix) == before
    assert leftovers(prefix) == []
    assert not list((tmp_path / "alice").rglob("journal.jsonl"))  # the journal is the environment's


def test_a_second_fixdnn_with_another_home_is_refused_while_the_first_holds_the_lock(tmp_path):
    prefix = copy_venv(tmp_path / "env")
    index = index_dir()
    alice, bob = _as(tmp_path / "alice", index), _as(tmp_path / "bob", index)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from fixdnn.repair.transaction import EnvLock\n"
         "with EnvLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)", str(prefix)],
        env={**alice, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree(prefix)
        proc = apply_in_child(prefix, [PIN93], bob)
        assert proc.returncode != 0 and f"another fixdnn (pid {holder.pid})" in proc.stderr
        assert tree(prefix) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_plan_made_before_another_transaction_is_refused(tmp_path):
    prefix = copy_venv(tmp_path / "env")
    env = _as(tmp_path / "u", index_dir())
    code = ("import sys; from fixdnn.model.actions import Action, Plan\n"
            "from fixdnn.repair.apply import Target, apply_plan\n"
            "from fixdnn.repair import transaction as t\n"
            "p = sys.argv[1]; seen = t.head(p)\n"
            "plan = Plan((Action('env-set', name='A', value='1'),))\n"
            "apply_plan(plan, Target(p, None, ()))\n"  # another fixdnn lands a transaction meanwhile
            "try:\n    apply_plan(plan, Target(p, None, ()), expect_head=seen)\n"
            "except t.LockError as exc:\n    print(exc)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(prefix)], env={**env, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert "changed" in proc.stdout and "while this plan was made" in proc.stdout, proc.stderr
    assert len(json.loads(_ok(run_py(HISTORY.format(prefix=str(prefix)), env)))) == 1


def test_a_file_owned_by_another_distribution_is_stashed_and_restored(tmp_path):
    prefix = copy_venv(tmp_path / "env")
    extra = tmp_path / "extra"
    header = "nvidia/cudnn/include/cudnn_frontend.h"
    build_wheel(extra, "nvidia-cudnn-frontend", "1.0", {header: b"// frontend 1.0\n"})
    build_wheel(extra, "cudnn-tool", "3.0", {"cudnn_tool.py": b"V = '3.0'\n", header: b"// shipped by tool 3\n"})
    env = _as(tmp_path / "u", index_dir(), PIP_FIND_LINKS=f"{index_dir()} {extra}")
    pip_into(prefix / "bin/python", env, "install", "-q", "nvidia-cudnn-frontend==1.0")
    before = tree(prefix)
    res = json.loads(_ok(apply_in_child(prefix, [{"kind": "pip-install", "packages": ["cudnn-tool==3.0"]}], env)))
    assert res["outcome"] == "applied"
    assert (site_of(prefix) / header).read_bytes() == b"// shipped by tool 3\n"
    assert _ok(run_py(ROLLBACK.format(prefix=str(prefix)), env)).split()[1] == "1"
    assert (site_of(prefix) / header).read_bytes() == b"// frontend 1.0\n"
    assert tree(prefix) == before
    assert leftovers(prefix) == []


def test_state_on_another_filesystem_leaves_nothing_in_the_environment(tmp_path, other_filesystem):
    prefix = copy_venv(tmp_path / "env")
    env = _as(other_filesystem, index_dir())
    before = tree(prefix)
    assert json.loads(_ok(apply_in_child(prefix, [PIN93], env)))["outcome"] == "applied"
    assert not any(n.startswith(".fixdnn-") for n in os.listdir(prefix))
    _ok(run_py(ROLLBACK.format(prefix=str(prefix)), env))
    assert tree(prefix) == before
    assert leftovers(prefix) == []
    assert sorted(os.listdir(prefix / ".fixdnn")) == ["lock", "txn"]


def test_another_users_interrupted_transaction_is_named_when_the_environment_is(tmp_path):
    """bob's apply is killed in a shared environment; alice (her own HOME and state) is told when a command
    names the environment (--prefix, or it is the active one), not when it is about something else."""
    import signal

    prefix = copy_venv(tmp_path / "shared env")
    index = index_dir()
    alice, bob = _as(tmp_path / "alice", index), _as(tmp_path / "bob", index)
    killed = apply_in_child(prefix, [PIN93], {**bob, "FIXDNN_TEST_CRASH_AT": "1:done"})
    assert killed.returncode == -signal.SIGKILL
    named = run_fixdnn(["--prefix", str(prefix), "history"], alice)
    active = run_fixdnn(["symptoms"], {**alice, "VIRTUAL_ENV": str(prefix)})
    elsewhere = run_fixdnn(["symptoms"], alice)
    for proc in (named, active):
        assert "was interrupted" in proc.stderr and str(prefix) in proc.stderr, proc.stderr
    assert "was interrupted" not in elsewhere.stderr
    # bob changed it: his own notice does not depend on naming it
    mine = run_fixdnn(["symptoms"], bob)
    assert "was interrupted" in mine.stderr


def test_site_packages_on_another_filesystem_is_refused_before_anything_changes(tmp_path, other_filesystem):
    """A stash is a rename into <prefix>/.fixdnn; site-packages mounted (or linked) from another filesystem
    cannot be renamed there, so apply says so in one line before the first step, and the environment is as
    it was (the first rename would otherwise fail halfway through a step)."""
    prefix = copy_venv(tmp_path / "env")
    site = site_of(prefix)
    shutil.copytree(site, other_filesystem, symlinks=True)
    shutil.rmtree(site)
    site.symlink_to(other_filesystem)
    before = tree(prefix), tree(other_filesystem)
    proc = apply_in_child(prefix, [PIN93], _as(tmp_path / "u", index_dir()))
    assert proc.returncode != 0
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("fixdnn.repair.apply.ApplyError: ") and f"{site} is on another filesystem" in line
    assert "nothing changed" in line, line
    assert (tree(prefix), tree(other_filesystem)) == before
    assert not list(prefix.glob(".fixdnn/txn/*"))


def test_unwritable_user_state_does_not_stop_history_or_rollback(tmp_path):
    prefix = copy_venv(tmp_path / "env")
    blocker = tmp_path / "a file"
    blocker.write_text("")
    env = _as(tmp_path / "u", index_dir())
    env["FIXDNN_STATE_DIR"] = str(blocker / "state")  # cannot be created: a file is in the way
    assert json.loads(_ok(apply_in_child(prefix, [PIN93], env)))["outcome"] == "applied"
    hist = run_fixdnn(["--prefix", str(prefix), "history"], env, how="script", timeout=60)
    assert hist.returncode == 0 and "applied" in hist.stdout and "Traceback" not in hist.stderr, hist.stderr
    back = run_fixdnn(["--prefix", str(prefix), "rollback"], env, how="script", timeout=60)
    assert back.returncode == 0 and "rolled back" in back.stdout, back.stderr


@pytest.fixture()
def other_user():
    """A throwaway user (root only), removed afterwards."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd to create a second user")
    name = f"fdn{os.getpid() % 100000}"
    made = subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"useradd failed: {made.stderr.decode().strip()}")
    try:
        user = pwd.getpwnam(name)
        try:
            can = subprocess.run([sys.executable, "-c", "import fixdnn"], capture_output=True,
                                 user=user.pw_uid, group=user.pw_gid, cwd="/").returncode == 0
        except OSError:
            can = False
        if not can:
            pytest.skip("the second user cannot run this checkout's Python (a private folder above it)")
        yield user
    finally:
        subprocess.run(["userdel", name], capture_output=True)


def test_another_users_environment_gets_one_line_and_no_change(tmp_path, other_user):
    os.chmod(tmp_path, 0o755)
    prefix = copy_venv(tmp_path / "root's env")
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, other_user.pw_uid, other_user.pw_gid)
    before = tree(prefix)
    env = cli_env(home / "state", index_dir(), HOME=str(home))
    cli = [*argv_for("script"), "--prefix", str(prefix)]  # run as another user: no warm server of theirs
    for args in (["rollback"], ["history"]):
        proc = subprocess.run([*cli, *args], env=env, capture_output=True, text=True, timeout=60,
                              user=other_user.pw_uid, group=other_user.pw_gid, cwd=str(home))
        assert "Traceback" not in proc.stderr, proc.stderr
        if args == ["rollback"]:
            assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
            assert "cannot write to the environment" in proc.stderr and "run fixdnn as its owner (root)" in proc.stderr
        else:
            assert proc.returncode == 0 and "no transactions" in proc.stdout, proc.stderr
    assert tree(prefix) == before and not (prefix / ".fixdnn").exists()


def test_read_only_environment_gets_one_line_from_rollback_and_history(tmp_path):
    prefix = copy_venv(tmp_path / "env")
    env = _as(tmp_path / "u", index_dir())
    assert json.loads(_ok(apply_in_child(prefix, [PIN93], env)))["outcome"] == "applied"
    before = tree(prefix)
    ok = subprocess.run(["mount", "--bind", str(prefix), str(prefix)], capture_output=True)
    if ok.returncode != 0:
        pytest.skip(f"cannot bind-mount (needs root): {ok.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(prefix)], check=True, capture_output=True)
        back = run_fixdnn(["--prefix", str(prefix), "rollback"], env, how="script", timeout=60)
        hist = run_fixdnn(["--prefix", str(prefix), "history"], env, how="script", timeout=60)
    finally:
        subprocess.run(["umount", str(prefix)], check=True)
    assert back.returncode == 2 and len(back.stderr.strip().splitlines()) == 1, back.stderr
    assert "cannot write to the environment, nothing changed" in back.stderr and "Read-only" in back.stderr
    assert hist.returncode == 0 and "applied" in hist.stdout, hist.stderr
    assert tree(prefix) == before
