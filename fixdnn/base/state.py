"""fixdnn's own state directory: caches, journals and locks, kept per environment.

Layout::

    $XDG_STATE_HOME/fixdnn/            (an empty or relative XDG_STATE_HOME is ignored: ~/.local/state/fixdnn)
        envs/<key>/                    one folder per target environment
            target                     JSON: the root and prefix the key was made from (for people and `history`)
            integrity-cache.json       (fixdnn.facts.integrity) file hashes
            ...                        journals, locks: whoever needs per-environment state
        changed/<key>                  this user started a transaction there (fixdnn.repair.transaction.remember):
                                       the environments every command checks for an interrupted one

``<key>`` is the first 16 hex digits of sha256 over the environment's root (``--root``, or empty) and its
prefix, so the same prefix seen inside two different mounted images gets two folders.

The state directory belongs to the user running fixdnn, so it is found from the process environment:
``os.environ`` by default; probes pass ``host.environ`` (the same thing outside tests, a private HOME in
tests). Nothing here writes unless asked (``create=True``, :func:`write_atomic`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

from fixdnn.base.atomic import write_atomic  # noqa: F401 - the one atomic write, also reached from here
from fixdnn.base.statedir import state_dir  # noqa: F401 - where it is (light: the shell hook needs it too)


def env_key(prefix: str, root: str | os.PathLike | None = None) -> str:
    """The stable folder name of one environment: 16 hex digits of sha256(root NUL prefix).

    Without a root the prefix is resolved first, so a venv reached through a symlink is one environment."""
    if root is None:
        prefix = os.path.realpath(os.fspath(prefix))
    text = f"{os.fspath(root) if root is not None else ''}\0{prefix}"
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def env_dir(prefix: str, root: str | os.PathLike | None = None, *, environ: Mapping[str, str] | None = None,
            create: bool = False) -> Path:
    """The per-environment state folder for ``prefix`` (a target path; ``root`` as given to Host).

    With ``create=True`` the folder is made (mode 0700) and a ``target`` file records what it is for;
    raises OSError when that is impossible (callers that only cache should ignore it).
    """
    folder = state_dir(environ) / "envs" / env_key(prefix, root)
    if create:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        marker = folder / "target"
        if not marker.exists():
            # JSON, not lines: a prefix may hold a newline
            record = {"root": os.fspath(root) if root is not None else None,
                      "prefix": os.path.realpath(prefix) if root is None else prefix}
            write_atomic(marker, json.dumps(record, ensure_ascii=False).encode("utf-8", "surrogateescape"))
    return folder



def target_file(host, target, name: str, create: bool) -> Path | None:
    """``name`` in the state folder of a diagnosed environment (``host``: its Host, ``target``: its
    TargetInfo; an environment without a prefix is keyed by its site dirs). None when there is no
    environment to key it by, or no folder (a cache that cannot be kept only costs time)."""
    key = target.prefix or "\n".join(target.site_dirs)
    if not key:
        return None
    try:
        return env_dir(key, host.root, environ=host.environ, create=create) / name
    except OSError:
        return None

def target_of(folder: Path) -> dict | None:
    """``{"root", "prefix"}`` recorded for a per-environment folder, or None when unreadable."""
    try:
        data = json.loads((folder / "target").read_bytes().decode("utf-8", "surrogateescape"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
