"""The prompt hook runs only what fixdnn wrote for this user: planted, edited, loosely permissioned or
foreign env scripts, and relative prefixes, are skipped in real bash, zsh and fish."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixdnn.shell.envfile import EnvFile, EnvOp
from fixdnn.shell.install import install

from .conftest import Run, Shell, base_env, require_shell
from .test_conda_and_hook import _hook_lines, _prompt, fixdnn_bin  # noqa: F401 - a fixture

pytestmark = pytest.mark.shell

OPS = (EnvOp("set", "FIXDNN_TRUSTED", "yes"),)


@pytest.fixture(params=["bash", "zsh", "fish"])
def hook_shell(request: pytest.FixtureRequest) -> Shell:
    return Shell(request.param, require_shell(request.param))


def _conda(parent: Path, name: str = "env") -> Path:
    prefix = parent / name
    (prefix / "conda-meta").mkdir(parents=True)
    install(prefix, EnvFile(OPS))
    return prefix


def _run(sh: Shell, tmp_path: Path, value: str, fixdnn_bin: Path, cwd_line: str = "") -> tuple[dict, str]:
    env = base_env(tmp_path, A=value)
    env["PATH"] = f"{fixdnn_bin}:{env['PATH']}"
    run = Run(sh, tmp_path).add(*_hook_lines(sh), _prompt(sh))
    if cwd_line:
        run.add(cwd_line)
    run.add(sh.export("VIRTUAL_ENV", '"$A"'), _prompt(sh)).dump()
    (after,) = run.go(env, stdin=sh.name != "fish")
    return after, run.stderr


def _planted(script: Path, sh: Shell) -> None:
    line = "set -gx LD_PRELOAD /tmp/evil.so\n" if sh.fish else "LD_PRELOAD=/tmp/evil.so; export LD_PRELOAD\n"
    script.write_text(script.read_text() + line)


def test_a_script_fixdnn_wrote_runs(hook_shell, tmp_path, fixdnn_bin):
    prefix = _conda(tmp_path)
    after, err = _run(hook_shell, tmp_path, str(prefix), fixdnn_bin)
    assert after.get("FIXDNN_TRUSTED") == "yes", err


def test_a_planted_script_does_not_run(hook_shell, tmp_path, fixdnn_bin):
    sh = hook_shell
    repo = tmp_path / "cloned repo" / ".venv" / "etc" / "fixdnn"
    repo.mkdir(parents=True)
    ext = "fish" if sh.fish else "sh"
    source = _conda(tmp_path / "elsewhere") / "etc" / "fixdnn" / f"env.{ext}"
    planted = repo / f"env.{ext}"
    planted.write_text(source.read_text())  # a valid fixdnn script, but not written for this prefix
    _planted(planted, sh)
    after, err = _run(sh, tmp_path, str(tmp_path / "cloned repo" / ".venv"), fixdnn_bin)
    assert "LD_PRELOAD" not in after and "FIXDNN_TRUSTED" not in after
    assert "did not write it for you" in err, err


def test_an_edited_script_does_not_run(hook_shell, tmp_path, fixdnn_bin):
    sh = hook_shell
    prefix = _conda(tmp_path)
    _planted(prefix / "etc" / "fixdnn" / ("env.fish" if sh.fish else "env.sh"), sh)
    after, err = _run(sh, tmp_path, str(prefix), fixdnn_bin)
    assert "LD_PRELOAD" not in after and "FIXDNN_TRUSTED" not in after
    assert "did not write it for you" in err, err


@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_a_script_others_can_write_does_not_run(hook_shell, tmp_path, fixdnn_bin, mode):
    sh = hook_shell
    prefix = _conda(tmp_path)
    os.chmod(prefix / "etc" / "fixdnn" / ("env.fish" if sh.fish else "env.sh"), mode)
    after, err = _run(sh, tmp_path, str(prefix), fixdnn_bin)
    assert "FIXDNN_TRUSTED" not in after and "writable by others" in err, err


def test_a_script_owned_by_someone_else_does_not_run(hook_shell, tmp_path, fixdnn_bin):
    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    sh = hook_shell
    prefix = _conda(tmp_path)
    os.chown(prefix / "etc" / "fixdnn" / ("env.fish" if sh.fish else "env.sh"), 65534, 65534)
    # root runs the shell here, so "owned by root" is the user's own; the file now belongs to nobody
    after, err = _run(sh, tmp_path, str(prefix), fixdnn_bin)
    assert "FIXDNN_TRUSTED" not in after and "owned by someone else" in err, err


def test_a_relative_prefix_is_ignored(hook_shell, tmp_path, fixdnn_bin):
    prefix = _conda(tmp_path, "relenv")
    after, err = _run(hook_shell, tmp_path, "relenv", fixdnn_bin, cwd_line='cd "$T"')
    assert prefix.is_dir() and "FIXDNN_TRUSTED" not in after, err
