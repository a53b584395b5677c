"""Shared objects with real GNU symbol versioning (version scripts), built with gcc and cached.

``provider`` defines functions under named versions (``{"libnvJitLink.so.12": ["nvJitLinkCreate"]}``);
``requester`` calls functions of a provider and is linked against it, so its DT_VERNEED and undefined
versioned symbols are exactly what ld writes for a real library built against that provider.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.envkit.elfkit import _CACHE


def _build(recipe: list, make) -> Path:
    key = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:24]
    cached = _CACHE / f"symver-{key}" / "lib.so"
    if not cached.exists():
        work = Path(tempfile.mkdtemp(prefix="symver-"))
        try:
            make(work)
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(work / "lib.so", tmp)
            os.replace(tmp, cached)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return cached


def _gcc(args: list[str]) -> None:
    proc = subprocess.run(["gcc", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"gcc {' '.join(args)} failed:\n{proc.stderr}")


def provider(dest: str | os.PathLike, soname: str, versions: dict[str, list[str]]) -> Path:
    """A library defining each function under its version (in dict order: later versions inherit none)."""
    def make(work: Path) -> None:
        funcs = [f for names in versions.values() for f in names]
        (work / "p.c").write_text("".join(f"int {f}(void) {{ return {n}; }}\n" for n, f in enumerate(funcs)))
        script = "".join(f"{v} {{ global: {' '.join(f + ';' for f in names)} {'local: *;' if i == 0 else ''} }};\n"
                         for i, (v, names) in enumerate(versions.items()))
        (work / "p.map").write_text(script)
        _gcc(["-shared", "-fPIC", "-o", str(work / "lib.so"), str(work / "p.c"), f"-Wl,-soname,{soname}",
              f"-Wl,--version-script={work / 'p.map'}"])

    built = _build(["provider", soname, list(versions.items())], make)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built, dest)
    return dest


def requester(dest: str | os.PathLike, soname: str, calls: list[str], against: str | os.PathLike,
              runpath: str | None = "$ORIGIN") -> Path:
    """A library whose exported ``use_all`` calls ``calls``, linked against the provider file ``against``."""
    against = Path(against)

    def make(work: Path) -> None:
        body = "".join(f"extern int {f}(void);\n" for f in calls)
        body += "int use_all(void) { return 0" + "".join(f" + {f}()" for f in calls) + "; }\n"
        (work / "r.c").write_text(body)
        args = ["-shared", "-fPIC", "-o", str(work / "lib.so"), str(work / "r.c"), f"-Wl,-soname,{soname}",
                "-Wl,--no-as-needed", str(against)]
        if runpath is not None:
            args += [f"-Wl,-rpath,{runpath}", "-Wl,--enable-new-dtags"]
        _gcc(args)

    digest = hashlib.sha256(against.read_bytes()).hexdigest()
    built = _build(["requester", soname, calls, digest, runpath], make)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built, dest)
    return dest
