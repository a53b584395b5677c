"""Jupyter kernelspecs that start this environment's interpreter (read-only, through a Host).

Jupyter looks for ``kernels/<name>/kernel.json`` in its data path, in this order (jupyter_core's
``jupyter_path``): ``$JUPYTER_PATH`` entries, the user's data dir (``$JUPYTER_DATA_DIR``, else
``$XDG_DATA_HOME/jupyter``, else ``~/.local/share/jupyter``), the environment's ``share/jupyter``, then the
system dirs ``/usr/local/share/jupyter`` and ``/usr/share/jupyter`` (machine-wide places: read below the
Host's system root, so a test plants them). The first folder of a name wins.

A kernelspec runs the environment when its ``argv[0]`` lives in the environment's ``bin/`` (symlinks of
the folder resolved, the interpreter's own symlink not: every venv's python points at the same base
interpreter). A bare ``python`` in the environment's own ``share/jupyter`` counts too: jupyter_client
replaces it by the interpreter of the Jupyter that launches it, which is this one when Jupyter runs here.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
from dataclasses import dataclass, field

from fixdnn.target.host import HostError

SYSTEM_DIRS = ("/usr/local/share/jupyter", "/usr/share/jupyter")


@dataclass(frozen=True)
class Kernelspec:
    name: str
    path: str  # kernel.json
    location: str  # path | user | env | system
    argv0: str | None
    runs_env: bool
    env: dict[str, str] = field(default_factory=dict)
    fixdnn: tuple[str, ...] = ()  # variables fixdnn set in it (metadata.fixdnn.env)
    shadowed: bool = False  # a folder of the same name earlier in the path wins
    error: str | None = None

    @property
    def inside(self) -> bool:
        return self.location == "env"

    def to_dict(self) -> dict:
        return {"name": self.name, "path": self.path, "location": self.location, "argv0": self.argv0,
                "runs_env": self.runs_env, "env": dict(self.env), "fixdnn_sets": list(self.fixdnn),
                "shadowed": self.shadowed, "error": self.error}


def data_dirs(host, prefix: str) -> list[tuple[str, str]]:
    """(folder, location) in Jupyter's search order."""
    out: list[tuple[str, str]] = []
    for entry in (host.env("JUPYTER_PATH") or "").split(os.pathsep):
        if entry:
            out.append((entry, "path"))
    user = host.env("JUPYTER_DATA_DIR")
    if not user:
        xdg = host.env("XDG_DATA_HOME") or posixpath.join(host.env("HOME") or "~", ".local/share")
        user = posixpath.join(xdg, "jupyter")
    out.append((user, "user"))
    out.append((posixpath.join(prefix, "share/jupyter"), "env"))
    out += [(entry, "system") for entry in SYSTEM_DIRS]
    seen: set[str] = set()
    return [(d, loc) for d, loc in out if not (d in seen or seen.add(d))]


def runs_env(host, argv0: str | None, prefix: str, location: str) -> bool:
    if not argv0:
        return False
    if "/" not in argv0:
        return location == "env" and re.fullmatch(r"python(\d+(\.\d+)?)?", argv0) is not None
    folder = host.realpath(posixpath.dirname(argv0))
    return folder == host.realpath(posixpath.join(prefix, "bin"))


def find(host, prefix: str) -> list[Kernelspec]:
    """Every kernelspec in the search path, in search order; ``runs_env`` says which start ``prefix``."""
    out: list[Kernelspec] = []
    names: set[str] = set()
    for folder, location in data_dirs(host, prefix):
        kernels = posixpath.join(folder, "kernels")
        try:
            entries = sorted(host.listdir(kernels))
        except (OSError, HostError):
            continue
        for name in entries:
            path = posixpath.join(kernels, name, "kernel.json")
            if not host.is_file(path):
                continue
            shadowed = name.lower() in names
            names.add(name.lower())
            try:
                data = json.loads(host.read_text(path))
                argv = data.get("argv") or []
                argv0 = argv[0] if argv and isinstance(argv[0], str) else None
                env = {str(k): str(v) for k, v in (data.get("env") or {}).items()}
                ours = ((data.get("metadata") or {}).get("fixdnn") or {}).get("env") or {}
            except (OSError, HostError, ValueError, AttributeError, TypeError) as exc:
                out.append(Kernelspec(name, path, location, None, False, shadowed=shadowed,
                                      error=f"unreadable kernel.json: {exc}"))
                continue
            out.append(Kernelspec(name, path, location, argv0, runs_env(host, argv0, prefix, location), env,
                                  tuple(ours), shadowed))
    return out


__all__ = ["Kernelspec", "data_dirs", "find", "runs_env"]
