"""fixdnn's own pip, run for a target interpreter that has none (a uv venv, ``venv --without-pip``) or whose
pip predates ``install --dry-run --report``.

``pip --python T ...`` (pip >= 22.3) starts pip in fixdnn's interpreter only to start it again in ``T`` as
``T <pip>/__pip-runner__.py ...``: the runner file puts exactly that copy of pip on ``T``'s import path. Running
the runner directly is the same command minus one pip start-up (about 0.35 s of CPU per call, and an apply
makes two). A pip without the runner file still gets ``--python``.
"""

from __future__ import annotations

import importlib.util
import os
import sys


def runner() -> str | None:
    """The ``__pip-runner__.py`` of fixdnn's own pip, or None (no pip, or one without the file)."""
    spec = importlib.util.find_spec("pip")
    for folder in (spec.submodule_search_locations or ()) if spec else ():
        path = os.path.join(folder, "__pip-runner__.py")
        if os.path.isfile(path):
            return path
    return None


def argv_for(python: str) -> tuple[str, ...] | None:
    """How to run fixdnn's own pip so that it installs into ``python``'s environment; None without a pip."""
    path = runner()
    if path:
        return (python, path)
    if importlib.util.find_spec("pip") is not None:
        return (sys.executable, "-m", "pip", "--python", python)
    return None


__all__ = ["argv_for", "runner"]
