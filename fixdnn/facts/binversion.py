"""The version a cuDNN or CUDA runtime file reports about itself, when nothing beside it says so.

A copy found through ``LD_LIBRARY_PATH`` or ``LD_PRELOAD`` is often only ``lib/`` files: no header, no
wheel or conda record, and a file name that carries the major only (``libcudnn.so.9``). "9" cannot satisfy
"9.24 or newer", so the file is asked: a tiny subprocess ``dlopen()``s that one copy (with only its own
folder on ``LD_LIBRARY_PATH``, nothing preloaded) and calls ``cudnnGetVersion()`` or
``cudaRuntimeGetVersion()``; neither needs a GPU or a driver. A copy that aborts, hangs (the subprocess is
killed after a few seconds) or lacks the symbol stays unknown, and the symptoms say so.

Answers are cached by file identity (:mod:`fixdnn.base.filecache`) in fixdnn's state folder, so each file
is asked once. Files of a ``--root`` image are never run: their code is not this machine's to execute.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from fixdnn.base.filecache import FileCache
from fixdnn.model.facts import LibraryCopy, Unknown
from fixdnn.target.host import Host, file_identity

CACHE_NAME = "binary-versions.json"
CACHE_SCHEMA = "fixdnn.binary-versions/1"
TIMEOUT = 10.0
FUNCTIONS = {"cudnn": "cudnnGetVersion", "cudart": "cudaRuntimeGetVersion"}

# Runs in a fresh interpreter (fixdnn's own, isolated): load one file, call one function, print one number.
_SCRIPT = r"""
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_LOCAL)
if sys.argv[2] == "cudnnGetVersion":
    fn = lib.cudnnGetVersion
    fn.restype, fn.argtypes = ctypes.c_size_t, []
    print(int(fn()))
else:
    value = ctypes.c_int(0)
    status = lib.cudaRuntimeGetVersion(ctypes.byref(value))
    print(value.value if status == 0 else "status %d" % status)
"""


def decode(family: str, value: int) -> str | None:
    """'9.13.0' for cuDNN 91300, '8.9.7' for cuDNN 8907, '12.5' for cudart 12050; None when implausible."""
    if value <= 0:
        return None
    if family == "cudart":
        return f"{value // 1000}.{value % 1000 // 10}"
    if value >= 90000:  # cuDNN 9 changed CUDNN_VERSION to major*10000 + minor*100 + patch
        return f"{value // 10000}.{value % 10000 // 100}.{value % 100}"
    return f"{value // 1000}.{value % 1000 // 100}.{value % 100}"


def needs_probe(copy: LibraryCopy) -> bool:
    """Only copies whose version is not known past the major (and that load at all) are asked."""
    if copy.family not in FUNCTIONS or copy.error is not None:
        return False
    return copy.version is None or "." not in copy.version


def ask(host: Host, copy: LibraryCopy) -> tuple[str | None, str]:
    """(version, how it was learnt) or (None, why not) by loading this one file in a subprocess."""
    function = FUNCTIONS[copy.family]
    folder = copy.realpath.rsplit("/", 1)[0] or "/"
    env = {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": folder}  # its own siblings, nothing of the user's
    result = host.run([sys.executable, "-I", "-S", "-c", _SCRIPT, copy.realpath, function], timeout=TIMEOUT, env=env)
    if result.timed_out:
        return None, f"loading it to call {function}() did not finish within {TIMEOUT:.0f} s"
    last = (result.stdout.strip().splitlines() or [""])[-1]
    if result.returncode != 0 or not last.isdigit():
        err = (result.stderr.strip().splitlines() or [last or f"exit status {result.returncode}"])[-1]
        return None, f"loading it to call {function}() failed: {err[:200]}"
    version = decode(copy.family, int(last))
    if version is None:
        return None, f"{function}() returned {last}"
    return version, f"{function}() = {last}"


def _cache_path(host: Host) -> Path:
    from fixdnn.base.state import state_dir

    return state_dir(host.environ) / CACHE_NAME


def fill(host: Host, copies: tuple[LibraryCopy, ...], *, save_cache: bool = True,
         ask=ask) -> tuple[tuple[LibraryCopy, ...], list[Unknown]]:
    """Copies with versions learnt from the binaries where nothing else knew them, and an unknown for each
    copy that could not say. ``ask`` is the probe (replaceable to count calls in tests)."""
    wanted = [c for c in copies if needs_probe(c)]
    if not wanted:
        return copies, []
    if host.root is not None:
        return copies, [Unknown(f"version of {c.path}", "not known from a header, a package record or its file "
                                "name, and files of a --root image are not run") for c in wanted]
    cache = FileCache(_cache_path(host), CACHE_SCHEMA)
    learnt = {copy.realpath: cache.remember(copy.realpath, lambda c=copy: file_identity(host, c.realpath),
                                            lambda c=copy: ask(host, c), tuple[str | None, str])
              for copy in wanted}
    if save_cache:
        cache.save()
    out, unknowns = [], []
    for copy in copies:
        if copy.realpath not in learnt:
            out.append(copy)
            continue
        version, how = learnt[copy.realpath]
        if version is not None:
            out.append(replace(copy, version=version, version_source=how))
        else:
            out.append(copy)
            unknowns.append(Unknown(f"version of {copy.path}", how))
    return tuple(out), unknowns


def how_to_check(copy: LibraryCopy) -> str:
    """The command a person runs to read the version by hand (shown when fixdnn could not); every value
    quoted for a POSIX shell."""
    function = FUNCTIONS.get(copy.family, "cudnnGetVersion")
    if function == "cudnnGetVersion":
        program = f"import ctypes; print(ctypes.CDLL({copy.realpath!r}).cudnnGetVersion())"
        folder = shlex.quote(os.path.dirname(copy.realpath) or "/")
        return f"LD_LIBRARY_PATH={folder} python -c {shlex.quote(program)}"
    program = (f"import ctypes; v = ctypes.c_int(); ctypes.CDLL({copy.realpath!r})"
               ".cudaRuntimeGetVersion(ctypes.byref(v)); print(v.value)")
    return f"python -c {shlex.quote(program)}"
