"""fixdnn's state directory: where it is, one folder per environment, atomic writes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fixdnn.base import state


def test_xdg_state_home_wins(tmp_path):
    assert state.state_dir({"XDG_STATE_HOME": str(tmp_path / "xdg"), "HOME": "/nowhere"}) == tmp_path / "xdg" / "fixdnn"


def test_empty_or_relative_xdg_falls_back_to_home(tmp_path):
    for xdg in ("", "relative/dir"):
        got = state.state_dir({"XDG_STATE_HOME": xdg, "HOME": str(tmp_path)})
        assert got == tmp_path / ".local" / "state" / "fixdnn"


def test_env_key_is_stable_and_separates_roots_and_prefixes():
    a = state.env_key("/opt/env")
    assert a == state.env_key("/opt/env") and len(a) == 16 and all(c in "0123456789abcdef" for c in a)
    assert a != state.env_key("/opt/env2")
    assert a != state.env_key("/opt/env", root="/mnt/image")


def test_env_dir_creates_private_folder_with_marker(tmp_path):
    prefix = "/srv/my env/$HOME 'q' \"dq\" \u00e9\nline"
    env = {"XDG_STATE_HOME": str(tmp_path)}
    folder = state.env_dir(prefix, environ=env)
    assert not folder.exists()  # nothing is written unless asked
    folder = state.env_dir(prefix, environ=env, create=True)
    assert folder.parent == tmp_path / "fixdnn" / "envs"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert state.target_of(folder) == {"root": None, "prefix": os.path.realpath(prefix)}
    assert state.env_dir(prefix, environ=env, create=True) == folder  # idempotent


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "f.json"
    target.write_bytes(b"old")
    inode = target.stat().st_ino
    state.write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_ino != inode  # a rename, not an in-place rewrite
    assert os.listdir(tmp_path) == ["f.json"]


def test_the_suite_keeps_fixdnns_state_out_of_the_users_home(tmp_path):
    """A diagnosis given a minimal environment (no HOME) writes its integrity cache to the state folder of
    fixdnn's own environment, which the session points at its own machine folder (tests/conftest.py): never
    the user's ~/.local/state."""
    from fixdnn.base.statedir import state_dir
    from tests.conftest import run_diagnosis
    from tests.envkit.env import EnvBuilder
    from tests.envkit.machine import SYSTEM_ROOT_VAR

    session = Path(os.environ[SYSTEM_ROOT_VAR])
    assert state_dir().is_relative_to(session)
    env = EnvBuilder(tmp_path / "venv").torch_cuda13()
    run_diagnosis(env.python, {"PATH": "/usr/bin:/bin"})
    written = {p.parent.name: p.read_text() for p in (state_dir() / "envs").glob("*/target")}
    assert any(str(env.prefix) in text for text in written.values()), written
