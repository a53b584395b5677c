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

A prefix also hides the bytecode that is already beside the sources (pip compiles every module it installs),
so a cold cache compiled the venv's and the standard library's modules once more (about 570 modules, in
every worker). ``cache_from_source`` therefore still names the usual ``__pycache__`` file when that file is
current for its source (the check the import system makes: flags, mtime and size); only a module without
one, or with a stale one, is compiled, and its bytecode goes to the prefix, never beside the source.
"""

from __future__ import annotations

import os
import sys
from importlib.util import MAGIC_NUMBER

from tests import _cache


def _current_beside(source: str) -> str | None:
    """The ``__pycache__`` bytecode of ``source`` if it is there and current (timestamp-checked), else None."""
    head, tail = os.path.split(source)
    stem, dot, _ = tail.rpartition(".")
    if not dot or sys.implementation.cache_tag is None:
        return None
    beside = os.path.join(head, "__pycache__", f"{stem}.{sys.implementation.cache_tag}.pyc")
    try:
        with open(beside, "rb") as fh:
            header = fh.read(16)
        st = os.stat(source)
    except OSError:
        return None
    # PEP 552 header: magic, flags (0: checked by timestamp), source mtime and size, each modulo 2**32
    current = (header[:4] == MAGIC_NUMBER and header[4:8] == b"\0\0\0\0"
               and int.from_bytes(header[8:12], "little") == int(st.st_mtime) & 0xFFFFFFFF
               and int.from_bytes(header[12:16], "little") == st.st_size & 0xFFFFFFFF)
    return beside if current else None


def _install() -> None:
    import importlib._bootstrap_external as external

    prefixed = external.cache_from_source

    def cache_from_source(path, debug_override=None, *, optimization=None):
        if debug_override is None and optimization is None and not sys.flags.optimize:
            beside = _current_beside(os.fspath(path))
            if beside:
                return beside
        return prefixed(path, debug_override, optimization=optimization)

    # SourceLoader.get_code looks the function up in its module at each import
    external.cache_from_source = cache_from_source


if sys.dont_write_bytecode and not sys.pycache_prefix:
    sys.pycache_prefix = str(_cache.root() / "pycache")
    sys.dont_write_bytecode = False
    _install()
