"""LD_PRELOAD in the loader model, compared with the real glibc loader (issue 11 item 2).

The oracle runs under a chosen LD_PRELOAD / LD_LIBRARY_PATH, performs the layout's dlopen() calls in
order (a full path, like torch's ctypes preload, or the root library) and then asks the loader which
object answers a SONAME (``dlopen(name, RTLD_NOLOAD)`` + ``dlinfo(RTLD_DI_LINKMAP)``): that object is the one
every later DT_NEEDED or dlopen() of the name binds to.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from fixdnn.facts.elf import read_elf
from fixdnn.facts.loader import loader_env_from_host, resolve, resolve_tree
from fixdnn.target.host import Host
from tests.envkit.elfkit import build_exe, build_so

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build real ELF objects")

ORACLE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *op = argv[i];
        if (op[0] == '+') {                         /* +PATH: dlopen it, as torch or the program would */
            if (!dlopen(op + 1, RTLD_NOW | RTLD_GLOBAL)) printf("E %s\n", dlerror());
        } else {                                    /* ?NAME: which loaded object answers this name */
            void *h = dlopen(op + 1, RTLD_NOW | RTLD_NOLOAD);
            struct link_map *lm = NULL;
            if (h && dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0) printf("Q %s %s\n", op + 1, lm->l_name);
            else printf("Q %s -\n", op + 1);
        }
    }
    return 0;
}
"""


@dataclass
class Case:
    preload: str
    ops: tuple[str, ...]  # "+path" loads, "?soname" asks
    llp: str | None = None
    first: tuple[str, ...] = ()  # full paths dlopen()ed before the root (torch's own preload)


def _lib(t: Path, rel: str, soname: str, **kw) -> str:
    return str(build_so(t / rel, soname, **kw))


def full_path_preload_beats_rpath(t):
    a = _lib(t, "a/libfdA.so.1", "libfdA.so.1")
    _lib(t, "b/libfdA.so.1", "libfdA.so.1")
    root = _lib(t, "app/libroot.so", "libroot.so", needed=["libfdA.so.1"], rpath="$ORIGIN/../b")
    return Case(a, ("+" + root, "?libfdA.so.1"))


def bare_name_preload_is_searched_like_the_program(t):
    _lib(t, "llp/libfdA.so.1", "libfdA.so.1")
    _lib(t, "b/libfdA.so.1", "libfdA.so.1")
    root = _lib(t, "app/libroot.so", "libroot.so", needed=["libfdA.so.1"], rpath="$ORIGIN/../b")
    return Case("libfdA.so.1", ("+" + root, "?libfdA.so.1"), llp=str(t / "llp"))


def preloaded_soname_answers_another_file_name(t):
    """A tarball file libfdA.so.1.13.0 preloaded by its full name still answers libfdA.so.1."""
    old = _lib(t, "old/libfdA.so.1.13.0", "libfdA.so.1")
    _lib(t, "b/libfdA.so.1", "libfdA.so.1")
    root = _lib(t, "app/libroot.so", "libroot.so", needed=["libfdA.so.1"], rpath="$ORIGIN/../b")
    return Case(old, ("+" + root, "?libfdA.so.1"))


def missing_preload_is_ignored(t):
    _lib(t, "b/libfdA.so.1", "libfdA.so.1")  # the copy the RPATH would find
    root = _lib(t, "app/libroot.so", "libroot.so", needed=["libfdA.so.1"], rpath="$ORIGIN/../b")
    return Case(str(t / "gone/libfdA.so.1"), ("+" + root, "?libfdA.so.1"))


def preload_wins_over_a_full_path_dlopen_of_another_copy(t):
    """torch's ctypes.CDLL(<wheel>/libcudnn.so.9) maps a second copy, but the SONAME stays the preload's."""
    a = _lib(t, "a/libfdA.so.1", "libfdA.so.1")
    b = _lib(t, "b/libfdA.so.1", "libfdA.so.1")
    root = _lib(t, "app/libroot.so", "libroot.so", needed=["libfdA.so.1"], rpath="$ORIGIN/../b")
    return Case(a, ("+" + b, "+" + root, "?libfdA.so.1"), first=(b,))


def space_and_colon_separated_list(t):
    a = _lib(t, "a/libfdA.so.1", "libfdA.so.1")
    c = _lib(t, "c/libfdC.so.1", "libfdC.so.1")
    _lib(t, "b/libfdA.so.1", "libfdA.so.1")
    _lib(t, "b/libfdC.so.1", "libfdC.so.1")
    root = _lib(t, "app/libroot.so", "libroot.so", needed=["libfdA.so.1", "libfdC.so.1"], rpath="$ORIGIN/../b")
    return Case(f"{a} :{c}", ("+" + root, "?libfdA.so.1", "?libfdC.so.1"))


def dependency_of_a_preload_comes_from_its_own_rpath(t):
    """A preloaded shim's DT_NEEDED sub-library is found through the shim's RPATH, before the program's."""
    _lib(t, "old/libfdSub.so.1", "libfdSub.so.1")
    shim = _lib(t, "old/libfdA.so.1", "libfdA.so.1", needed=["libfdSub.so.1"], rpath="$ORIGIN")
    _lib(t, "b/libfdSub.so.1", "libfdSub.so.1")
    root = _lib(t, "app/libroot.so", "libroot.so", needed=["libfdSub.so.1"], rpath="$ORIGIN/../b")
    return Case(shim, ("+" + root, "?libfdSub.so.1"))


CASES = [full_path_preload_beats_rpath, bare_name_preload_is_searched_like_the_program,
         preloaded_soname_answers_another_file_name, missing_preload_is_ignored,
         preload_wins_over_a_full_path_dlopen_of_another_copy, space_and_colon_separated_list,
         dependency_of_a_preload_comes_from_its_own_rpath]


@pytest.mark.parametrize("make", CASES, ids=[f.__name__ for f in CASES])
def test_model_matches_glibc_under_ld_preload(make, tmp_path):
    t = tmp_path / "tree"
    t.mkdir()
    case = make(t)
    exe = str(build_exe(tmp_path / "oracle/oracle", ORACLE, link_args=["-ldl"]))
    environ = {"PATH": "/usr/bin:/bin", "LD_PRELOAD": case.preload}
    if case.llp is not None:
        environ["LD_LIBRARY_PATH"] = case.llp
    proc = subprocess.run([exe, *case.ops], capture_output=True, text=True, env=environ, cwd=str(tmp_path), timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert not [line for line in proc.stdout.splitlines() if line.startswith("E ")], proc.stdout
    answers = {}
    for line in proc.stdout.splitlines():
        _, name, path = line.split(" ", 2)
        answers[name] = path
    host = Host(environ=environ)
    env = loader_env_from_host(host, cwd=str(tmp_path), executable=exe)
    root = next(op[1:] for op in case.ops if op.startswith("+") and op[1:] not in case.first)
    model = resolve_tree(host, root, env)
    for name, real in answers.items():
        res = model.get(name) or resolve(host, name, [read_elf(host, root)], env)
        assert res.path == real, f"glibc: {name} -> {real}\nmodel:\n" + "\n".join(res.explain())
