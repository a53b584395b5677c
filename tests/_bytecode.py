"""A pytest plugin (``-p tests._bytecode`` in pyproject's addopts): keep compiled test modules between runs
even where ``PYTHONDONTWRITEBYTECODE`` is set.

pytest rewrites the asserts of every test module, conftest and plugin module (hypothesis and xdist
included) and caches the result as bytecode next to the source; with ``PYTHONDONTWRITEBYTECODE`` it writes
nothing, so every run, and every xdist worker in it, rewrites all of them again: 2.5 s of CPU a worker
here. The variable asks that no bytecode be written beside the sources, so the suite honours that and
still caches: with ``sys.pycache_prefix`` all bytecode of this process (pytest's rewritten modules and
anything imported after this plugin) goes to a folder of the tests' cache, nothing into the checkout or
the venv. Child processes are untouched: they get the environment as it is. Without the variable, or with
``PYTHONPYCACHEPREFIX`` already chosen, nothing changes.
"""

from __future__ import annotations

import sys

from tests import _cache

if sys.dont_write_bytecode and not sys.pycache_prefix:
    sys.pycache_prefix = str(_cache.root() / "pycache")
    sys.dont_write_bytecode = False
