"""Real ELF shared objects compiled with gcc, cached per test session by their build recipe.

``build_so`` writes a shared object with a given SONAME, DT_NEEDED entries, DT_RPATH or DT_RUNPATH and
exported functions returning fixed integers (``cudnnGetVersion`` -> 90100, ...). Needed libraries do not
have to exist at build time: a throwaway library with that SONAME is linked against.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

_CACHE = Path(os.environ.get("FIXDNN_ELFKIT_CACHE") or tempfile.gettempdir()) / f"fixdnn-elfkit-{os.getuid()}"


def _gcc(args: list[str]) -> None:
    proc = subprocess.run(["gcc", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"gcc {' '.join(args)} failed:\n{proc.stderr}")


def build_so(
    dest: str | os.PathLike,
    soname: str | None = None,
    *,
    needed: tuple[str, ...] | list[str] = (),
    rpath: str | None = None,
    runpath: str | None = None,
    functions: dict[str, int] | None = None,
    c_source: str = "",
    link_args: tuple[str, ...] | list[str] = (),
) -> Path:
    """Compile a shared object to ``dest`` (parents created). Returns the path."""
    if rpath is not None and runpath is not None:
        raise ValueError("an object has either DT_RPATH or DT_RUNPATH here, not both")
    functions = dict(functions or {})
    recipe = json.dumps(
        [soname, list(needed), rpath, runpath, sorted(functions.items()), c_source, list(link_args)]
    )
    key = hashlib.sha256(recipe.encode()).hexdigest()[:24]

    def build(work: Path) -> Path:
        src = work / "lib.c"
        body = "#include <stddef.h>\n" + c_source + "\n"
        for name, value in functions.items():
            body += f"size_t {name}(void) {{ return {int(value)}; }}\n"
        if not functions and not c_source:
            body += "int fixdnn_elfkit_marker(void) { return 0; }\n"
        src.write_text(body)
        args = ["-shared", "-fPIC", "-o", str(work / "lib.so"), str(src)]
        if soname:
            args.append(f"-Wl,-soname,{soname}")
        if needed:  # a library given by its path is linked as its SONAME: DT_NEEDED in this order
            args += ["-Wl,--no-as-needed", *(str(_stub(name)) for name in needed)]
        if rpath is not None:
            args += [f"-Wl,-rpath,{rpath}", "-Wl,--disable-new-dtags"]
        if runpath is not None:
            args += [f"-Wl,-rpath,{runpath}", "-Wl,--enable-new-dtags"]
        _gcc(args + list(link_args))
        return work / "lib.so"

    cached = built_once(_CACHE / key / "lib.so", build)
    return deliver(cached, dest)


def _stub(soname: str) -> Path:
    """A throwaway library with that SONAME to link against, built once per cache (most are needed by many)."""

    def build(work: Path) -> Path:
        (work / "stub.c").write_text("int fixdnn_elfkit_stub(void) { return 0; }\n")
        _gcc(["-shared", "-fPIC", "-o", str(work / "stub.so"), str(work / "stub.c"), f"-Wl,-soname,{soname}"])
        return work / "stub.so"

    return built_once(_CACHE / ("stub-" + hashlib.sha256(soname.encode()).hexdigest()[:16]) / soname, build)


def built_once(cached: Path, build: Callable[[Path], Path], mode: int | None = None) -> Path:
    """``cached``, made first if it is not there: ``build(scratch_folder)`` returns the file to keep, which is
    stored atomically (parallel sessions may race) with ``mode`` if given."""
    if not cached.exists():
        work = Path(tempfile.mkdtemp(prefix="elfkit-"))
        try:
            built = build(work)
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(built, tmp)
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, cached)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return cached


def deliver(cached: Path, dest: str | os.PathLike) -> Path:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cached, dest)
    return dest


def build_exe(dest: str | os.PathLike, c_source: str, link_args: tuple[str, ...] | list[str] = ()) -> Path:
    """Compile a small program (used as the loader oracle)."""
    key = hashlib.sha256(json.dumps([c_source, list(link_args)]).encode()).hexdigest()[:24]

    def build(work: Path) -> Path:
        (work / "prog.c").write_text(c_source)
        _gcc(["-o", str(work / "prog"), str(work / "prog.c"), *link_args])
        return work / "prog"

    dest = deliver(built_once(_CACHE / key / "prog", build, mode=0o755), dest)
    os.chmod(dest, 0o755)
    return dest
