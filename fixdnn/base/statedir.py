"""Where fixdnn's per-user state folder is, and nothing else: importable by ``fixdnn hook`` without
paying for hashlib or typing (see :mod:`fixdnn.base.state` for what lives there)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

HOOK_TRUST = "hook-trust"  # <state>/hook-trust: digests of the env scripts fixdnn wrote (fixdnn.shell.trust)


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """``$FIXDNN_STATE_DIR``, else ``$XDG_STATE_HOME/fixdnn``, else ``~/.local/state/fixdnn`` (a relative
    value is ignored, as the XDG spec asks). An ``environ`` that names none of the three (no HOME: a minimal
    environment made for a child) says nothing about the user: fixdnn's own environment decides."""
    env = os.environ if environ is None else environ
    if environ is not None and not any(env.get(k) for k in ("FIXDNN_STATE_DIR", "XDG_STATE_HOME", "HOME")):
        return state_dir(None)
    explicit = env.get("FIXDNN_STATE_DIR", "")  # an override for tests and unusual setups
    if explicit and os.path.isabs(explicit):
        return Path(explicit)
    xdg = env.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "fixdnn"
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".local" / "state" / "fixdnn"
