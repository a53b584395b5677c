"""How fixdnn itself was installed, to name the exact command that adds an extra (``conda`` for lock).

This is about fixdnn's own interpreter (``sys``), never the target's: the extra must land next to fixdnn.
Read from fixdnn's dist-info (PEP 610 ``direct_url.json``, ``INSTALLER``) and where its venv lives
(pipx and ``uv tool`` keep one venv per tool under a known folder).
"""

from __future__ import annotations

import json
import shlex
import sys


def install_command(extra: str, *, python: str, prefix: str, direct_url: dict | None, installer: str | None,
                    version: str | None) -> str:
    """The command that installs fixdnn[extra] the way fixdnn is installed now (pure)."""
    marker = "/pipx/venvs/fixdnn"
    if marker in prefix.replace("\\", "/"):
        return "pipx inject fixdnn " + ("conda-lock" if extra == "conda" else f"'fixdnn[{extra}]'")
    source = None
    editable = False
    if direct_url and str(direct_url.get("url", "")).startswith("file://"):
        from urllib.parse import unquote

        source = unquote(direct_url["url"][len("file://"):])
        editable = bool((direct_url.get("dir_info") or {}).get("editable"))
    req = shlex.quote(f"{source}[{extra}]") if source else shlex.quote(
        f"fixdnn[{extra}]" + (f"=={version}" if version else ""))
    if "/uv/tools/fixdnn" in prefix.replace("\\", "/"):
        return f"uv tool install --force {'--editable ' if editable else ''}{req}"
    if (installer or "").strip() == "uv":
        return f"uv pip install --python {shlex.quote(python)} {'-e ' if editable else ''}{req}"
    return f"{shlex.quote(python)} -m pip install {'-e ' if editable else ''}{req}"


def hint(extra: str = "conda") -> str:
    """``install_command`` for the running fixdnn."""
    from importlib import metadata

    direct_url = installer = version = None
    try:
        dist = metadata.distribution("fixdnn")
        version = dist.version
        installer = dist.read_text("INSTALLER")
        text = dist.read_text("direct_url.json")
        direct_url = json.loads(text) if text else None
    except (metadata.PackageNotFoundError, ValueError):
        pass
    return install_command(extra, python=sys.executable, prefix=sys.prefix, direct_url=direct_url,
                           installer=installer, version=version)
