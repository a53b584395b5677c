"""venv: the activate block, sourced by real shells from hostile paths, restores the exact environment."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fixdnn.shell.envfile import EnvFile, EnvOp, apply_ops
from fixdnn.shell.install import install, planned_writes, uninstall

from .conftest import FULL_HOSTILE, HOSTILE_VALUE, STOCK_HOSTILE, Run, base_env, make_venv

pytestmark = pytest.mark.shell

OPS_A = (
    EnvOp("path-prepend", "LD_LIBRARY_PATH", "/opt/cudnn 9/lib 'x' $y", reason="cuDNN 9 from the wheel",
          fixes="cudnn-not-found"),
    EnvOp("set", "EMPTY_ONE", "now 'set' \"$x\" `id` \\ \n ü"),
    EnvOp("set", "NEW_ONE", ""),
    EnvOp("unset", "DROP_ME"),
    EnvOp("path-remove", "LD_LIBRARY_PATH", "/usr/lib"),
)
OPS_B = (
    EnvOp("path-prepend", "LD_LIBRARY_PATH", "/opt/b"),
    EnvOp("set", "NEW_ONE", "b"),
    EnvOp("path-prepend", "OTHER_PATH", "/b/o"),
)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module", params=[STOCK_HOSTILE, FULL_HOSTILE], ids=["stock-path", "full-path"])
def venvs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    parent = tmp_path_factory.mktemp("venvs")
    a = make_venv(parent, request.param + " A")
    b = make_venv(parent, request.param + " B")
    install(a, EnvFile(OPS_A))
    install(b, EnvFile(OPS_B))
    return a, b


def _env(tmp_path: Path, venvs: tuple[Path, Path]) -> dict[str, str]:
    return base_env(tmp_path, A=str(venvs[0]), B=str(venvs[1]), DROP_ME="bye")


def _ours(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k in {"LD_LIBRARY_PATH", "EMPTY_ONE", "NEW_ONE", "DROP_ME", "OTHER_PATH"}}


def test_activate_applies_and_deactivate_restores(shell, tmp_path, venvs):
    env = _env(tmp_path, venvs)
    run = Run(shell, tmp_path).dump().add(shell.activate("A")).dump().add("deactivate").dump()
    before, during, after = run.go(env)
    assert _ours(during) == _ours(apply_ops(before, OPS_A)), run.stderr
    assert during["VIRTUAL_ENV"] == str(venvs[0])
    assert after == before, run.stderr


def test_nested_and_repeated_activation_restore_exactly(shell, tmp_path, venvs):
    env = _env(tmp_path, venvs)
    run = Run(shell, tmp_path).dump()
    run.add(shell.activate("A"), shell.activate("A")).dump()  # re-sourcing A: applied once
    run.add(shell.activate("B")).dump()  # B replaces A, as the venv's own scripts do
    run.add("deactivate").dump()
    run.add(shell.activate("B"), "deactivate", shell.activate("A"), "deactivate").dump()
    before, a_twice, b_over_a, after_b, after_all = run.go(env)
    assert _ours(a_twice) == _ours(apply_ops(before, OPS_A)), run.stderr
    assert len(a_twice["_FIXDNN_STACK"].split()) == 1
    assert _ours(b_over_a) == _ours(apply_ops(before, OPS_B)), run.stderr
    assert after_b == before, run.stderr
    assert after_all == before, run.stderr


def test_child_shell_sees_the_state_and_reactivation_restores(posix_shell, tmp_path, venvs):
    """An exported state lets a child shell that re-sources activate still restore the parent's values."""
    env = _env(tmp_path, venvs)
    inner = f"{posix_shell.path} -c '. \"$A/bin/activate\"; deactivate; env -0 > \"$T/dump.3\"'"
    run = Run(posix_shell, tmp_path).dump().add(posix_shell.activate("A")).dump().add(inner)
    run.n = 3
    before, _during, child_after = run.go(env)
    # PATH is the venv's own business: its _OLD_VIRTUAL_PATH is not exported, so a child keeps venv/bin.
    child_after.pop("PATH"), before.pop("PATH")
    assert child_after == before, run.stderr


def test_install_is_idempotent_and_uninstall_is_byte_identical(tmp_path):
    venv = make_venv(tmp_path, "plain")
    scripts = [venv / "bin/activate", venv / "bin/activate.fish"]
    original = [_digest(p) for p in scripts]
    env = EnvFile(OPS_B)
    planned = planned_writes(venv, env)
    assert install(venv, env) == planned
    assert set(scripts) <= set(planned)
    assert planned_writes(venv, env) == []
    assert install(venv, env) == []
    assert install(venv) == []  # re-render from the env.toml on disk: nothing to do
    removed = uninstall(venv)
    assert set(scripts) <= set(removed)
    assert [_digest(p) for p in scripts] == original
    assert EnvFile.load(EnvFile.path_for(venv)) == env  # the data stays
    assert uninstall(venv) == []


def test_activate_without_trailing_newline_is_restored(tmp_path):
    venv = make_venv(tmp_path, "nonl")
    act = venv / "bin/activate"
    act.write_bytes(act.read_bytes().rstrip(b"\n"))
    before = act.read_bytes()
    install(venv, EnvFile(OPS_B))
    uninstall(venv)
    assert act.read_bytes() == before


def test_hostile_value_in_starting_environment_survives(shell, tmp_path, venvs):
    env = _env(tmp_path, venvs)
    run = Run(shell, tmp_path).add(shell.activate("A"), "deactivate").dump()
    (after,) = run.go(env)
    assert after["LD_LIBRARY_PATH"] == HOSTILE_VALUE
    assert after["EMPTY_ONE"] == ""
    assert "NEW_ONE" not in after
