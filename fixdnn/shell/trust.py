"""What the prompt hook may run: only the env scripts fixdnn itself wrote, for this user, for that prefix.

``etc/fixdnn/env.sh`` is shell code inside the environment, and ``$VIRTUAL_ENV`` / ``$CONDA_PREFIX`` can
point anywhere (a cloned repository with a planted ``.venv/etc/fixdnn/env.sh``). So whenever fixdnn
writes those scripts it records, in the user's *own* state folder, a digest of each::

    <state>/hook-trust/<sha256 of the prefix's real path>    "sh <sha256>\\nfish <sha256>\\n"

and the hook sources a script only when its digest is recorded there, it is a regular file owned by
the user or root and writable by nobody else, and the prefix is absolute (like direnv's allow list,
but the allowing is done by fixdnn writing the file). Digests are taken over the content without its
trailing newlines, which is what the shell's ``$(cat file)`` holds: the hook checks and then evaluates
that same captured text, so a file swapped between the check and the use is never run.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from fixdnn.base.atomic import write_atomic
from fixdnn.base.statedir import HOOK_TRUST as FOLDER
from fixdnn.base.statedir import state_dir


def trust_dir(environ: Mapping[str, str] | None = None) -> Path:
    return state_dir(environ) / FOLDER


def digest(content: bytes) -> str:
    """The digest the hook computes: sha256 of the text as ``$(cat file)`` captures it."""
    return hashlib.sha256(content.rstrip(b"\n")).hexdigest()


def prefix_key(prefix: str | os.PathLike[str]) -> str:
    """sha256 of the prefix's real path, as ``cd "$p" && pwd -P`` (fish: ``realpath``) prints it."""
    return hashlib.sha256(os.fsencode(os.path.realpath(os.fspath(prefix)))).hexdigest()


def record(prefix: str | os.PathLike[str], scripts: Mapping[str, bytes],
           environ: Mapping[str, str] | None = None) -> Path | None:
    """Trust ``scripts`` (``{"sh": bytes, "fish": bytes}``) for ``prefix``. Best effort: returns None when
    the user's state folder cannot be written (the hook then simply does not source them)."""
    folder = trust_dir(environ)
    path = folder / prefix_key(prefix)
    text = "".join(f"{kind} {digest(data)}\n" for kind, data in sorted(scripts.items()))
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, text.encode("ascii"), mode=0o600)
    except OSError:
        return None
    return path


def is_trusted(prefix: str | os.PathLike[str], kind: str, content: bytes,
               environ: Mapping[str, str] | None = None) -> bool:
    """The check the hook makes, in Python (for tests and ``fixdnn`` itself)."""
    try:
        lines = (trust_dir(environ) / prefix_key(prefix)).read_text("ascii").splitlines()
    except (OSError, UnicodeError):
        return False
    return f"{kind} {digest(content)}" in lines


__all__ = ["digest", "is_trusted", "prefix_key", "record", "trust_dir"]
