"""apply / rollback / history on real venvs with real pip from a local folder index (see test_apply_kit)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixdnn.model.actions import Action, Plan
from fixdnn.repair.apply import ApplyError, Target, apply_plan
from fixdnn.repair.transaction import (
    EnvLock,
    LockError,
    TxnError,
    rollback,
    transactions,
)
from tests.e2e.test_apply_kit import (
    ROOT,
    apply_in_child,
    build_wheel,
    cli_env,
    copy_venv,
    index_dir,
    site_of,
    tree,
)
from tests.envkit.cli import run_fixdnn

HOSTILE = "env with space 'q' é"  # no $: the stdlib venv's own bin/activate expands it
PIN93 = {"kind": "pip-install", "packages": ["nvidia-cudnn-cu12==9.3.0.75"], "fixes": ["cudnn-version-mismatch"]}


@pytest.fixture()
def world(tmp_path, monkeypatch):
    index = index_dir()
    env = cli_env(tmp_path / "state", index)
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("PIP_") or key == "FIXDNN_STATE_DIR":
            monkeypatch.setenv(key, value)
    prefix = copy_venv(tmp_path / HOSTILE)
    return prefix, env


def target_of(prefix: Path) -> Target:
    return Target(str(prefix), str(prefix / "bin/python"), (str(site_of(prefix)),))


def version_of(prefix: Path, name: str = "nvidia_cudnn_cu12") -> list[str]:
    return sorted(p.name for p in site_of(prefix).glob(f"{name}-*.dist-info"))


def cli(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_fixdnn(args, env, timeout=timeout)


def test_install_pin_then_rollback_restores_exact_tree(world):
    prefix, env = world
    before = tree(prefix)
    lib = site_of(prefix) / "nvidia/cudnn/lib/libcudnn.so.9"
    old_inode = lib.stat().st_ino
    res = apply_plan(Plan((Action(**PIN93),)), target_of(prefix))
    assert res.outcome == "applied", res.reason
    assert version_of(prefix) == ["nvidia_cudnn_cu12-9.3.0.75.dist-info"]
    assert tree(prefix) != before
    # the old files sit in the stash, renamed (same inode), not copied
    stash = transactions(prefix)[-1].folder / "stash"
    assert old_inode in {p.stat().st_ino for p in stash.rglob("*") if p.is_file()}

    hist = cli(env, "--prefix", str(prefix), "history")
    assert hist.returncode == 0 and res.txn_id in hist.stdout and "applied" in hist.stdout
    assert "nvidia-cudnn-cu12==9.3.0.75" in hist.stdout
    back = cli(env, "--prefix", str(prefix), "rollback")
    assert back.returncode == 0, back.stderr
    assert tree(prefix) == before
    assert lib.stat().st_ino == old_inode
    assert "rolled-back" in cli(env, "--prefix", str(prefix), "history").stdout
    again = cli(env, "--prefix", str(prefix), "rollback")
    assert again.returncode == 2 and "nothing to roll back" in again.stderr


def test_path_remove_through_activation_scripts_and_rollback(world, tmp_path):
    prefix, env = world
    before = tree(prefix)
    stray = "/opt/stray cudnn/lib"
    plan = Plan((Action("path-remove", fixes=("cudnn-shadowed",), name="LD_LIBRARY_PATH", value=stray,
                        reason="an old cuDNN shadows the wheel's"),))
    res = apply_plan(plan, target_of(prefix))
    assert res.outcome == "applied", res.reason
    assert "path-remove" in (prefix / "etc/fixdnn/env.toml").read_text()
    bash = shutil.which("bash")
    if bash:
        out = subprocess.run([bash, "-c", '. "$1/bin/activate"; printf %s "$LD_LIBRARY_PATH"', "_", str(prefix)],
                             env={"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": f"{stray}:/keep"},
                             capture_output=True, text=True)
        assert out.stdout == "/keep", out.stderr
    rolled, count = rollback(str(prefix))
    assert count == 1 and rolled.outcome == "rolled-back"
    assert tree(prefix) == before


def test_second_apply_is_refused_naming_the_holder(world):
    prefix, env = world
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from fixdnn.repair.transaction import EnvLock\n"
         "with EnvLock(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)", str(prefix)],
        env={**env, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockError, match=f"pid {holder.pid}"):
            apply_plan(Plan((Action(**PIN93),)), target_of(prefix))
        with pytest.raises(LockError, match=f"pid {holder.pid}"):
            rollback(str(prefix))
    finally:
        holder.kill()
        holder.wait()
    # the holder died: its lock is gone with it
    with EnvLock(prefix):
        pass


def test_pin_missing_from_index_changes_nothing(world):
    prefix, env = world
    before = tree(prefix)
    plan = Plan((Action("path-remove", name="LD_LIBRARY_PATH", value="/x"),
                 Action("pip-install", packages=("nvidia-cudnn-cu12==9.9.9",))))
    with pytest.raises(ApplyError, match="pip cannot install nvidia-cudnn-cu12==9.9.9"):
        apply_plan(plan, target_of(prefix))
    assert tree(prefix) == before and transactions(prefix) == []


def test_failing_pip_step_rolls_back_and_exits_1(world, tmp_path):
    prefix, env = world
    # passes the dry run (metadata is fine) but pip refuses to unpack it (a file outside the target)
    extra = tmp_path / "extra"
    build_wheel(extra, "evil-pkg", "1.0", {"evil_pkg.py": b"", "../../../../../../../evil-outside": b"x"})
    os.environ["PIP_FIND_LINKS"] = f"{index_dir()} {extra}"
    before = tree(prefix)
    plan = Plan((Action(**PIN93), Action("env-set", name="CUDNN_LOGLEVEL_DBG", value="0"),
                 Action("pip-install", packages=("evil-pkg==1.0",))))
    res = apply_plan(plan, target_of(prefix))
    assert res.outcome == "failed-and-rolled-back" and "step 3 failed: pip failed" in res.reason
    assert res.steps_done == 2
    assert tree(prefix) == before
    assert transactions(prefix)[-1].outcome == "failed-and-rolled-back"


def test_verification_failure_rolls_back(world):
    prefix, env = world
    before = tree(prefix)
    res = apply_plan(Plan((Action(**PIN93),)), target_of(prefix), verify=lambda: ["still present: x"])
    assert res.outcome == "failed-and-rolled-back" and "verification failed: still present: x" in res.reason
    assert tree(prefix) == before


def test_rollback_by_id_refuses_while_newer_is_applied(world):
    prefix, env = world
    before = tree(prefix)
    first = apply_plan(Plan((Action(**PIN93),)), target_of(prefix))
    mid = tree(prefix)
    second = apply_plan(Plan((Action("env-set", name="TF_CPP_MIN_LOG_LEVEL", value="1"),)), target_of(prefix))
    with pytest.raises(TxnError, match="newer transactions.*" + second.txn_id):
        rollback(str(prefix), first.txn_id)
    assert rollback(str(prefix), second.txn_id)[1] == 1
    assert tree(prefix) == mid
    out = cli(os.environ.copy(), "--prefix", str(prefix), "rollback", first.txn_id[:22])
    assert out.returncode == 0, out.stderr
    assert tree(prefix) == before


def test_read_only_environment_is_refused_before_any_change(world):
    prefix, env = world
    before = tree(prefix)
    ok = subprocess.run(["mount", "--bind", str(prefix), str(prefix)], capture_output=True)
    if ok.returncode != 0:
        pytest.skip(f"cannot bind-mount (needs root): {ok.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(prefix)], check=True, capture_output=True)
        for plan in (Plan((Action(**PIN93),)), Plan((Action("env-unset", name="LD_PRELOAD"),))):
            with pytest.raises(ApplyError, match="cannot write to the environment, nothing changed.*Read-only"):
                apply_plan(plan, target_of(prefix))
    finally:
        subprocess.run(["umount", str(prefix)], check=True)
    assert tree(prefix) == before and transactions(prefix) == []


def test_full_disk(world, tmp_path):
    prefix, env = world
    small = tmp_path / "small"
    small.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], capture_output=True)
    if ok.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {ok.stderr.decode().strip()}")
    try:
        tight = copy_venv(small / "env")
        big = tmp_path / "big"
        build_wheel(big, "big-pkg", "1.0", {"big_pkg/blob.bin": os.urandom(3 << 20)})
        os.environ["PIP_FIND_LINKS"] = f"{index_dir()} {big}"
        before = tree(tight)
        with pytest.raises(ApplyError, match="not enough room on the filesystem"):
            apply_plan(Plan((Action("pip-install", packages=("big-pkg==1.0",)),)), target_of(tight))
        assert tree(tight) == before
    finally:
        subprocess.run(["umount", str(small)], check=True)
    # a write that fails anyway (ENOSPC in step 2, injected) rolls back step 1 exactly
    before = tree(prefix)
    os.environ["FIXDNN_TEST_FAIL_WRITE"] = "2"
    try:
        res = apply_plan(Plan((Action(**PIN93), Action("env-set", name="CUDNN_LOGINFO_DBG", value="0"))),
                         target_of(prefix))
    finally:
        del os.environ["FIXDNN_TEST_FAIL_WRITE"]
    assert res.outcome == "failed-and-rolled-back" and "No space left" in res.reason
    assert tree(prefix) == before


def test_sigterm_during_pip_rolls_back(world):
    prefix, env = world
    before = tree(prefix)
    spec = {"prefix": str(prefix), "python": str(prefix / "bin/python"), "site_dirs": [str(site_of(prefix))],
            "actions": [PIN93]}
    from tests.e2e.test_apply_kit import APPLY_SNIPPET

    child = subprocess.Popen([sys.executable, "-c", APPLY_SNIPPET.format(spec=json.dumps(spec))],
                             env={**env, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT), stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        txns = transactions(prefix)
        if txns and any(r["op"] == "spawned" for r in txns[-1].records):
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)
    out, _ = child.communicate(timeout=60)
    result = json.loads(out)
    assert result["outcome"] == "failed-and-rolled-back" and "SIGTERM" in result["reason"]
    assert tree(prefix) == before


def test_interrupted_transaction_is_reported_then_rolled_back(world):
    prefix, env = world
    before = tree(prefix)
    proc = apply_in_child(prefix, [PIN93, {"kind": "env-set", "name": "CUDNN_X", "value": "1"}],
                          {**env, "FIXDNN_TEST_CRASH_AT": "0:end"})
    assert proc.returncode == -signal.SIGKILL
    out = cli(env, "symptoms")
    assert "was interrupted" in out.stderr and "rollback" in out.stderr and out.stderr.count("\n") == 1
    hist = cli(env, "--prefix", str(prefix), "history")
    assert "interrupted" in hist.stdout
    back = cli(env, "--prefix", str(prefix), "rollback")
    assert back.returncode == 0 and "2 steps undone" in back.stdout
    assert tree(prefix) == before
    assert "was interrupted" not in cli(env, "symptoms").stderr


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_no_deps_install_runs_in_hash_checking_mode(world):
    """A --no-deps step whose hashes the plan knows installs exactly that file: pip refuses any other."""
    prefix, _env = world
    pin = "nvidia-cudnn-cu12==9.3.0.75"
    wheel = next(index_dir().glob("nvidia_cudnn_cu12-9.3.0.75-*.whl"))
    before = tree(prefix)
    wrong = Action("pip-install", packages=(pin,), pip_args=("--no-deps",), hashes=(f"{pin} sha256:{'0' * 64}",))
    assert "--require-hashes" in wrong.command(str(prefix / "bin/python"))
    res = apply_plan(Plan((wrong,)), target_of(prefix))
    assert res.outcome == "failed-and-rolled-back" and "hash" in res.reason.lower(), res.reason
    assert tree(prefix) == before
    right = Action("pip-install", packages=(pin,), pip_args=("--no-deps",), hashes=(f"{pin} sha256:{_sha256(wheel)}",))
    res = apply_plan(Plan((right,)), target_of(prefix))
    assert res.outcome == "applied", res.reason
    assert version_of(prefix) == ["nvidia_cudnn_cu12-9.3.0.75.dist-info"]
    req = transactions(prefix)[-1].folder / "step-1.requirements.txt"
    assert req.read_text() == f"{pin} --hash=sha256:{_sha256(wheel)}\n"


def test_cached_template_outlives_the_venv_running_the_suite(tmp_path):
    """The template venvs are cached across runs and checkouts: their interpreter must be the base Python, not
    the running venv's (Python 3.10 points a venv made from a venv at the latter), and a cached template
    whose interpreter is gone is rebuilt, not copied into thirty failing tests."""
    from tests.e2e.test_apply_kit import _template_usable, template_venv

    link = template_venv() / "bin/python"
    python = link.resolve()
    assert python.is_file()
    if sys.prefix != sys.base_prefix:
        assert not Path(os.readlink(link)).is_relative_to(sys.prefix), os.readlink(link)
    stale = tmp_path / "template"
    (stale / "bin").mkdir(parents=True)
    (stale / ".complete").write_text("")
    (stale / "bin/python").symlink_to(tmp_path / "deleted-venv/bin/python")
    assert not _template_usable(stale)
    (stale / "bin/python").unlink()
    (stale / "bin/python").symlink_to(python)
    assert _template_usable(stale)


@pytest.mark.parametrize("runner", [True, False], ids=["runner", "pip --python"])
def test_own_pip_installs_into_a_pip_less_target(tmp_path, monkeypatch, runner):
    """Both ways of running fixdnn's own pip for a target without one install into the target, not here."""
    from fixdnn.target import ownpip

    if not runner:
        monkeypatch.setattr(ownpip, "runner", lambda: None)
    prefix = copy_venv(tmp_path / HOSTILE)
    argv = ownpip.argv_for(str(prefix / "bin/python"))
    assert (argv[0] == str(prefix / "bin/python")) is runner
    proc = subprocess.run([*argv, "install", "--quiet", "cudnn-tool==2.0"], env=cli_env(tmp_path / "s", index_dir()),
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert version_of(prefix, "cudnn_tool") == ["cudnn_tool-2.0.dist-info"]
    assert not (prefix / "lib" / "pip").exists() and not any(site_of(prefix).glob("pip*"))
