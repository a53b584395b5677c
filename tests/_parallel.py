"""A pytest plugin (``-p tests._parallel`` in pyproject's addopts): run on every core with pytest-xdist.

Put here rather than as ``-n auto`` in addopts so a checkout whose venv predates pytest-xdist still runs
(serially), and ``-n 0`` / ``-n 4`` / ``-p no:xdist`` on the command line still win. The suite is safe to
run in parallel: every test works in its own tmp_path, and the caches shared between processes (tests/envkit
elfkit, the apply kit's index and template venvs) are content-keyed and built under a file lock.
"""

from __future__ import annotations

import importlib.util


def pytest_load_initial_conftests(early_config, parser, args):
    chosen = any(a in ("-n", "--numprocesses") or a.startswith(("-n", "--numprocesses=")) for a in args)
    disabled = "no:xdist" in args
    if not chosen and not disabled and importlib.util.find_spec("xdist") is not None:
        args[:0] = ["-n", "auto"]
