"""Search-path symptoms: LD_LIBRARY_PATH entries that point nowhere, search the current directory, or can be
written by someone else, and LD_PRELOAD forcing a DNN runtime into every process.

glibc splits LD_LIBRARY_PATH on ':' and ';' and reads an empty element as the current directory; a
relative element is searched relative to the current directory too.
"""

from __future__ import annotations

from fixdnn.facts.cpu import load_rules
from fixdnn.model.facts import Facts
from fixdnn.symptoms.registry import check


def _entries(facts: Facts, variable: str):
    if facts.cpu is None:
        return ()
    return tuple(e for e in facts.cpu.search_path if e.variable == variable)


def _shown(raw: str) -> str:
    return raw if len(raw) <= 80 else raw[:77] + "..."


@check("FDN301", "ld-library-path-missing-dir", "warning", "An LD_LIBRARY_PATH entry points at nothing")
def ld_library_path_missing_dir(facts: Facts, compat):
    """An absolute LD_LIBRARY_PATH entry that does not exist (or is not a directory) is harmless to the
    loader but is usually a left-over from an old CUDA / cuDNN install or a mistyped path, and it hides
    the real intent of the variable. Remove it."""
    for e in _entries(facts, "LD_LIBRARY_PATH"):
        if e.kind == "absolute" and not e.is_dir:
            what = "is not a directory" if e.exists else "does not exist"
            yield ld_library_path_missing_dir.spec.make(
                f"LD_LIBRARY_PATH[{e.index}] {_shown(e.raw)!r} {what}.",
                {"variable": e.variable, "index": e.index, "entry": e.raw, "exists": e.exists},
                chain=[f"LD_LIBRARY_PATH[{e.index}] = {e.raw!r}: {what}"],
                hint="remove the entry from LD_LIBRARY_PATH")


@check("FDN302", "ld-library-path-unsafe-entry", "error", "LD_LIBRARY_PATH makes the loader search the current directory")
def ld_library_path_unsafe_entry(facts: Facts, compat):
    """An empty element (a leading, trailing or doubled ``:``) or a relative one (``lib``, ``./build``) makes
    the loader search the current directory, or a path below it, for every library of every program:
    whoever controls the directory you start a program in can put a ``libcudnn.so.9`` or ``libc.so.6``
    there and have it run. It also makes results depend on where you stand. Remove the element or make it
    absolute."""
    for e in _entries(facts, "LD_LIBRARY_PATH"):
        if e.kind in ("empty", "relative"):
            what = ("an empty element (leading, trailing or doubled ':')" if e.kind == "empty"
                    else f"a relative element {_shown(e.raw)!r}")
            yield ld_library_path_unsafe_entry.spec.make(
                f"LD_LIBRARY_PATH[{e.index}] is {what}: the loader searches the current directory.",
                {"variable": e.variable, "index": e.index, "entry": e.raw, "kind": e.kind},
                chain=[f"LD_LIBRARY_PATH[{e.index}] = {e.raw!r}", "glibc reads it relative to the current directory"],
                hint="remove the element (or make it an absolute path)")


@check("FDN303", "ld-library-path-writable-dir", "warning", "An LD_LIBRARY_PATH directory is writable by others")
def ld_library_path_writable_dir(facts: Facts, compat):
    """A directory on LD_LIBRARY_PATH, or one of its parents, that other users can write to (world-writable,
    or group-writable by a group you are not in; for a parent, a sticky bit as on /tmp protects it) lets
    them drop a library that every process of yours then loads. Move the libraries somewhere only you
    can write, or fix the directory's mode."""
    for e in _entries(facts, "LD_LIBRARY_PATH"):
        if e.kind == "absolute" and e.writable:
            yield ld_library_path_writable_dir.spec.make(
                f"LD_LIBRARY_PATH[{e.index}] {_shown(e.raw)!r} can be written by other users: {e.writable[0]}.",
                {"variable": e.variable, "index": e.index, "entry": e.raw, "writable": list(e.writable)},
                chain=[f"LD_LIBRARY_PATH[{e.index}] = {e.raw!r}"] + list(e.writable),
                hint="chmod o-w (and g-w) the directory, or move the libraries to a private directory")


@check("FDN304", "ld-preload-dnn", "warning", "LD_PRELOAD forces a DNN / CUDA / OpenMP / MKL library into every process")
def ld_preload_dnn(facts: Facts, compat):
    """``LD_PRELOAD`` loads its libraries before anything else into *every* program started from this
    shell. A cuDNN, CUDA, OpenMP or MKL library there overrides the copy each framework was built and
    tested with (and can itself cause FDN201's OpenMP clash). It is a diagnostic tool or a last resort
    (MKL's E37 workaround), not a setting to keep. Remove it once the real cause is fixed."""
    patterns = load_rules().preload_patterns
    for e in _entries(facts, "LD_PRELOAD"):
        base = e.raw.rsplit("/", 1)[-1]
        real_base = (e.realpath or "").rsplit("/", 1)[-1]
        if any(p.search(base) or (real_base and p.search(real_base)) for p in patterns):
            yield ld_preload_dnn.spec.make(
                f"LD_PRELOAD[{e.index}] forces {_shown(e.raw)!r} into every process.",
                {"variable": e.variable, "index": e.index, "entry": e.raw, "exists": e.exists},
                chain=[f"LD_PRELOAD[{e.index}] = {e.raw!r}"] + ([] if e.exists or e.kind == "name"
                                                                else ["(the file does not exist: ld.so prints an error for every program)"]),
                hint="remove it from LD_PRELOAD")

