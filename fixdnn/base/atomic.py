"""The one way fixdnn replaces a file: all of the new content or none of it, even across a crash.

A temporary file in the same folder (so the rename stays on one filesystem) is written, flushed and
fsync'd, given the mode the file had (a new file gets the usual ``0o666 & ~umask``, not mkstemp's 0600),
renamed over the path, and the folder is fsync'd so the rename itself survives a power cut.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it; set back at once
    os.umask(mask)
    return mask


def fsync_dir(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes | str | Callable[[BinaryIO], None], *,
                 mode: int | None = None, make_parents: bool = False) -> None:
    """Replace ``path`` with ``data``: bytes, text (UTF-8, surrogates kept) or a function that writes to
    the open binary file (to stream large content). ``mode`` defaults to the old file's, or the umask's
    for a new one. Raises OSError; the temporary file never stays behind."""
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data)
            fh.flush()
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


__all__ = ["fsync_dir", "write_atomic"]
