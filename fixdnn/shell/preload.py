"""The in-process repair: a ``.pth`` line, a stdlib-only hook module and its data, rendered from env.toml.

Activation scripts only reach shells that source them. A Jupyter kernel, an IDE running ``env/bin/python``,
a cron job or ``python -m`` from another tool never do, but every one of them runs ``site``, which executes
the ``import`` lines of ``.pth`` files in site-packages. So fixdnn writes:

* ``<site>/_fixdnn_preload.py``: the hook (``preload_hook.py`` of this package, copied byte for byte);
* ``<site>/fixdnn-preload.pth``: one line that arms the hook with the sha256 of the data;
* ``<prefix>/etc/fixdnn/preload.json``: the data, rendered from the same ``EnvFile`` the shell scripts are
  rendered from, plus the sha256 of env.toml and of the hook, and the size and mtime of each library.

The hook refuses to act when any of these differ from what was written here (see preload_hook.py). What a
change can do inside a process is decided here once (:func:`in_process`) so the plan can say it plainly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from fixdnn.shell.envfile import EnvFileError

if TYPE_CHECKING:
    from fixdnn.shell.envfile import EnvFile, EnvOp

HOOK_MODULE = "_fixdnn_preload"
PTH_NAME = "fixdnn-preload.pth"
DATA = Path("etc", "fixdnn", "preload.json")
FORMAT = 1
# Variables the dynamic loader reads once, at process start: changing them in os.environ reaches only
# children of the process, never the process's own later dlopen() calls.
LOADER_VARIABLES = ("LD_LIBRARY_PATH", "LD_PRELOAD", "LD_AUDIT", "LD_BIND_NOW")


class PreloadError(EnvFileError):
    """A preload that cannot be written (a missing library, no site-packages); one line."""


def hook_source() -> bytes:
    return Path(__file__).with_name("preload_hook.py").read_bytes()


def in_process(op: EnvOp) -> tuple[bool, str]:
    """Whether ``op`` takes effect inside a running interpreter when applied before the framework import."""
    if op.name in LOADER_VARIABLES or op.name.startswith("LD_"):
        return False, (f"{op.name} is read by the dynamic loader at process start: inside an already running "
                       "interpreter it only reaches child processes; the preloaded copies stand in for it")
    return True, f"{op.name} is applied to os.environ before the framework is first imported"


def site_dir(prefix: str | os.PathLike[str], site_dirs: tuple[str, ...] = ()) -> Path | None:
    """The environment's own site-packages: the first of ``site_dirs`` inside ``prefix``, else the one
    ``lib/python*/site-packages`` folder; None when it has none (no Python process runs from it)."""
    prefix = Path(prefix)
    real = os.path.realpath(prefix)
    for site in site_dirs:
        if os.path.realpath(site).startswith(real.rstrip("/") + "/"):
            return Path(site)
    found = sorted(p for p in prefix.glob("lib/python*/site-packages") if p.is_dir())
    if not found:
        return None
    if len(found) > 1:
        raise PreloadError(f"{prefix}: {len(found)} lib/python*/site-packages folders; cannot tell where the "
                           "preload hook belongs (give the target's interpreter with --python)")
    return found[0]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def render(prefix: str | os.PathLike[str], env: EnvFile, env_toml: str,
           site_dirs: tuple[str, ...] = ()) -> list[tuple[Path, bytes]]:
    """(file, bytes) for the hook, its .pth line and its data; empty when ``env`` changes nothing.

    Reads each preloaded library's size and mtime (it must exist: a preload of a missing file is refused).
    """
    site = site_dir(prefix, site_dirs)
    if site is None or (not env.ops and not env.preloads):
        return []
    prefix = Path(prefix)
    hook = hook_source()
    libs = []
    for pre in env.preloads:
        try:
            st = os.stat(pre.path)
        except OSError as exc:
            raise PreloadError(f"preload {pre.path}: {exc.strerror or exc}; cannot preload a missing library") \
                from None
        libs.append({"path": pre.path, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "reason": pre.reason,
                     "fixes": pre.fixes})
    ops = []
    for op in env.ops:
        effective, why = in_process(op)
        ops.append({**op.to_dict(), "in_process": effective, "effect": why})
    data = {
        "format": FORMAT,
        "written_by": "fixdnn",
        "env_toml_sha256": _sha256(env_toml.encode("utf-8")),
        "hook_sha256": _sha256(hook),
        "preload": libs,
        "ops": ops,
    }
    text = (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    pth = (f"import {HOOK_MODULE}; {HOOK_MODULE}.arm({_sha256(text)!r})  "
           "# fixdnn in-process repair; removed by 'fixdnn rollback'\n").encode()
    return [(prefix / DATA, text), (site / f"{HOOK_MODULE}.py", hook), (site / PTH_NAME, pth)]


def cache_files(site: Path) -> list[Path]:
    """The bytecode the target's interpreter writes when it imports the hook: rollback removes it too, so
    the environment comes back byte-exact. The cache tag follows from ``lib/pythonX.Y`` (CPython)."""
    m = re.search(r"python(\d+)\.(\d+)", os.fspath(site))
    if not m:
        return []
    tag = f"cpython-{m.group(1)}{m.group(2)}"
    return [site / "__pycache__" / f"{HOOK_MODULE}.{tag}{opt}.pyc" for opt in ("", ".opt-1", ".opt-2")]


def files(prefix: str | os.PathLike[str], site_dirs: tuple[str, ...] = ()) -> list[Path]:
    """Every file the in-process repair may own in this environment (present or not), bytecode included."""
    try:
        site = site_dir(prefix, site_dirs)
    except PreloadError:
        site = None
    if site is None:
        return [Path(prefix) / DATA]
    return [Path(prefix) / DATA, site / f"{HOOK_MODULE}.py", site / PTH_NAME, *cache_files(site)]


def describe(prefix: str | os.PathLike[str], site_dirs: tuple[str, ...] = ()) -> dict:
    """What the in-process repair of this environment does, read back from its data (for ``fixdnn env``)."""
    paths = files(prefix, site_dirs)
    present = [os.fspath(p) for p in paths if p.exists()]
    out: dict = {"installed": len(paths) > 1 and all(p.exists() for p in paths[:3]), "files": present, "preload": [], "ops": []}
    try:
        data = json.loads(paths[0].read_text("utf-8"))
    except (OSError, ValueError):
        return out
    out["preload"] = [{k: lib.get(k) for k in ("path", "reason", "fixes")} for lib in data.get("preload", ())]
    out["ops"] = [{k: op.get(k) for k in ("op", "name", "value", "in_process", "effect")} for op in data.get("ops", ())]
    return out


__all__ = ["DATA", "HOOK_MODULE", "LOADER_VARIABLES", "PTH_NAME", "PreloadError", "describe", "files", "hook_source",
           "in_process", "render", "site_dir"]
