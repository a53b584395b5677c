"""Where the suite keeps what outlives a run (built wheels and venvs, bytecode, locks shared by runs):
``$FIXDNN_TEST_CACHE`` (.ci/run sets it) or the machine's temp folder. Standard library only: the early
plugin tests/_bytecode.py uses it before anything else is imported."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def root() -> Path:
    """The suite's cache folder of this user. Read from the environment, not from ``tempfile``: the session
    points its children's TMPDIR at a folder of its own (tests/conftest.py), which a later run never sees."""
    return Path(os.environ.get("FIXDNN_TEST_CACHE") or tempfile.gettempdir()) / f"fixdnn-test-cache-{os.getuid()}"
