"""The one atomic write (base/atomic.py): all of the new content or none, mode kept, nothing left behind;
and the writers that use it (env.toml, the activate-script install, state files) replace, never edit."""

from __future__ import annotations

import os
import stat

import pytest

from fixdnn.base.atomic import write_atomic
from fixdnn.shell.envfile import EnvFile, EnvOp
from fixdnn.shell.install import install


def test_replaces_keeps_mode_and_a_new_file_follows_the_umask(tmp_path):
    path = tmp_path / "f"
    path.write_text("old")
    os.chmod(path, 0o751)
    write_atomic(path, "new ü")
    assert path.read_text("utf-8") == "new ü" and stat.S_IMODE(path.stat().st_mode) == 0o751
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "sub" / "g", b"x", make_parents=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "sub" / "g").stat().st_mode) == 0o640  # not mkstemp's 0600
    write_atomic(path, lambda fh: fh.write(b"streamed"))
    assert path.read_bytes() == b"streamed"


def test_a_writer_that_fails_leaves_the_old_content_and_no_temporary(tmp_path):
    path = tmp_path / "f"
    path.write_text("old")

    def half(fh):
        fh.write(b"half of it")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomic(path, half)
    assert path.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["f"]


def test_a_hard_link_keeps_the_old_content(tmp_path):
    """Replaced by rename, not written in place: a hard-linked copy (cp -al) is not changed through the link."""
    path = tmp_path / "f"
    path.write_text("old")
    os.link(path, tmp_path / "link")
    write_atomic(path, "new")
    assert (tmp_path / "link").read_text() == "old" and path.read_text() == "new"


def test_env_file_dump_and_install_replace_files(tmp_path):
    prefix = tmp_path / "venv"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "pyvenv.cfg").write_text("home = /usr/bin\n")
    activate = "deactivate () {\n    unset VIRTUAL_ENV\n}\n"
    (prefix / "bin" / "activate").write_text(activate)
    os.link(prefix / "bin" / "activate", tmp_path / "activate.copy")
    env = EnvFile((EnvOp("set", "OMP_NUM_THREADS", "4", reason="test"),))
    target = EnvFile.path_for(prefix)
    env.dump(target)
    os.link(target, tmp_path / "env.copy")
    EnvFile((EnvOp("set", "OMP_NUM_THREADS", "8", reason="test"),)).dump(target)
    assert '"8"' in target.read_text() and '"4"' in (tmp_path / "env.copy").read_text()
    install(prefix, env)
    assert "fixdnn" in (prefix / "bin" / "activate").read_text()
    assert (tmp_path / "activate.copy").read_text() == activate
