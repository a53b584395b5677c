"""Differential test: the loader model against the real glibc loader, one generated layout per test.

The oracle is a small C program run with a controlled environment. It dlopen()s the layout's root object
(optionally calls the root's own ``fixdnn_dlopen(name)`` so the dlopen comes *from a library*, the way
TensorFlow loads cuDNN) and prints every mapped object's name as the loader recorded it
(``dl_iterate_phdr``), or the loader's error.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from fixdnn.facts.elf import read_elf
from fixdnn.facts.ldcache import read_ld_cache
from fixdnn.facts.loader import default_dirs_for, loader_env_from_host, resolve, resolve_tree
from fixdnn.target.host import Host
from tests.envkit.elfkit import build_exe, build_so

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build real ELF objects")

ORACLE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
static int show(struct dl_phdr_info *i, size_t n, void *tag) {
    if (i->dlpi_name && i->dlpi_name[0]) printf("%s %s\n", (const char *)tag, i->dlpi_name);
    return 0;
}
int main(int argc, char **argv) {
    dl_iterate_phdr(show, "P");            /* what the program had before: the model's "already loaded" */
    void *h = dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL);
    if (!h) { printf("E %s\n", dlerror()); return 0; }
    if (argc > 2) {                        /* dlopen() issued by code inside the root library */
        void *(*f)(const char *) = (void *(*)(const char *))dlsym(h, "fixdnn_dlopen");
        if (!f || !f(argv[2])) { printf("E %s\n", dlerror()); }
    }
    dl_iterate_phdr(show, "L");
    return 0;
}
"""

DLOPEN_SRC = """
#include <dlfcn.h>
void *fixdnn_dlopen(const char *name) { return dlopen(name, RTLD_NOW | RTLD_GLOBAL); }
"""


@dataclass
class Layout:
    root: str  # the object the program dlopen()s (absolute path)
    check: tuple[str, ...]  # sonames whose resolution is compared
    llp: str | None = None  # LD_LIBRARY_PATH, raw
    cwd: str | None = None
    dlopen: str | None = None  # name the root library dlopen()s itself
    exe_link_args: tuple[str, ...] = ()
    exe_dir: str | None = None
    fail: dict[str, str] = field(default_factory=dict)  # soname -> expected loader error substring


# The one exception to "tests never read the machine they run on": here the oracle IS this machine's glibc,
# so the model must see the same loader cache, default directories and ld.so settings. Every library these
# layouts ask for has a name no machine has (libfd*), or is libz.so.1 looked up from the same cache both use.
THIS_MACHINE = "/"

def _lib(t: Path, rel: str, soname: str | None = None, **kw) -> str:
    return str(build_so(t / rel, soname or Path(rel).name, **kw))


def _i386_so(dest: Path, soname: str) -> Path | None:
    """A 32-bit shared object without libc (gcc -m32 often lacks its 32-bit runtime; ld -m elf_i386 works)."""
    work = dest.parent / ".i386"
    work.mkdir(parents=True, exist_ok=True)
    (work / "x.c").write_text("int fixdnn_i386(void) { return 32; }\n")
    try:
        subprocess.run(["gcc", "-m32", "-fPIC", "-c", str(work / "x.c"), "-o", str(work / "x.o")],
                       check=True, capture_output=True)
        subprocess.run(["ld", "-m", "elf_i386", "-shared", "-soname", soname, "-o", str(dest), str(work / "x.o")],
                       check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return dest


# -- layouts: each builds a tree under t and says what to compare --------------------------------------


def rpath_origin(t):
    _lib(t, "deps/libfdA.so.1")
    return Layout(_lib(t, "app/libroot.so", needed=["libfdA.so.1"], rpath="$ORIGIN/../deps"), ("libfdA.so.1",))


def runpath_origin(t):
    _lib(t, "deps/libfdA.so.1")
    return Layout(_lib(t, "app/libroot.so", needed=["libfdA.so.1"], runpath="${ORIGIN}/../deps"), ("libfdA.so.1",))


def rpath_beats_ld_library_path(t):
    _lib(t, "a/libfdA.so.1")
    _lib(t, "llp/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"], rpath="$ORIGIN/../a")
    return Layout(root, ("libfdA.so.1",), llp=str(t / "llp"))


def ld_library_path_beats_runpath(t):
    _lib(t, "a/libfdA.so.1")
    _lib(t, "llp/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"], runpath="$ORIGIN/../a")
    return Layout(root, ("libfdA.so.1",), llp=str(t / "llp"))


def rpath_inherited_by_dependency(t):
    _lib(t, "mids/libfdMid.so.1", needed=["libfdA.so.1"])
    _lib(t, "deps/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdMid.so.1"], rpath="$ORIGIN/../mids:$ORIGIN/../deps")
    return Layout(root, ("libfdMid.so.1", "libfdA.so.1"))


def runpath_not_inherited(t):
    _lib(t, "mids/libfdMid.so.1", needed=["libfdA.so.1"])
    _lib(t, "deps/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdMid.so.1"], runpath="$ORIGIN/../mids:$ORIGIN/../deps")
    return Layout(root, ("libfdA.so.1",), fail={"libfdA.so.1": "libfdA.so.1: cannot open shared object file"})


def requester_runpath_disables_inherited_rpath(t):
    _lib(t, "mids/libfdMid.so.1", needed=["libfdA.so.1"], runpath="$ORIGIN/nowhere")
    _lib(t, "deps/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdMid.so.1"], rpath="$ORIGIN/../mids:$ORIGIN/../deps")
    return Layout(root, ("libfdA.so.1",), fail={"libfdA.so.1": "libfdA.so.1: cannot open shared object file"})


def ancestor_with_runpath_is_transparent(t):
    # root(RPATH) -> mid1(RUNPATH) -> mid2(nothing) -> A: mid2 walks up past mid1 to root's RPATH.
    _lib(t, "m1/libfdM1.so.1", needed=["libfdM2.so.1"], runpath="$ORIGIN/../m2")
    _lib(t, "m2/libfdM2.so.1", needed=["libfdA.so.1"])
    _lib(t, "deps/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdM1.so.1"], rpath="$ORIGIN/../m1:$ORIGIN/../deps")
    return Layout(root, ("libfdM1.so.1", "libfdM2.so.1", "libfdA.so.1"))


def ld_library_path_order(t):
    _lib(t, "one/libfdA.so.1")
    _lib(t, "two/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"])
    return Layout(root, ("libfdA.so.1",), llp=f"{t}/missing:{t}/two:{t}/one")


def ld_library_path_semicolon(t):
    _lib(t, "two/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"])
    return Layout(root, ("libfdA.so.1",), llp=f"{t}/one;{t}/two")


def empty_ld_library_path_entry_is_cwd(t):
    _lib(t, "work/libfdA.so.1")  # the stale copy in the current directory
    _lib(t, "good/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"])
    return Layout(root, ("libfdA.so.1",), llp=f":{t}/good", cwd=str(t / "work"))


def relative_ld_library_path_entry(t):
    _lib(t, "work/sub/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"])
    return Layout(root, ("libfdA.so.1",), llp="sub", cwd=str(t / "work"))


def origin_through_symlinked_dir(t):
    # app/lib -> ../real/lib; $ORIGIN/../deps follows the link first, so real/deps wins over app/deps.
    _lib(t, "real/deps/libfdA.so.1")
    _lib(t, "app/deps/libfdA.so.1")
    _lib(t, "real/lib/libroot.so", needed=["libfdA.so.1"], rpath="$ORIGIN/../deps")
    os.symlink("../real/lib", t / "app/lib")
    return Layout(str(t / "app/lib/libroot.so"), ("libfdA.so.1",))


def origin_of_dependency_found_via_dotdot(t):
    _lib(t, "x/libfdMid.so.1", needed=["libfdA.so.1"], runpath="$ORIGIN/../y")
    _lib(t, "y/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdMid.so.1"], rpath="$ORIGIN/../x")
    return Layout(root, ("libfdMid.so.1", "libfdA.so.1"))


def missing_everywhere(t):
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"], rpath="$ORIGIN/../deps")
    return Layout(root, ("libfdA.so.1",), llp=str(t / "nothing"),
                  fail={"libfdA.so.1": "libfdA.so.1: cannot open shared object file"})


def missing_rpath_entry_then_found(t):
    _lib(t, "deps/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"], rpath="$ORIGIN/../gone:/nonexistent/x:$ORIGIN/../deps")
    return Layout(root, ("libfdA.so.1",))


def wrong_class_copy_skipped(t):
    if _i386_so(t / "a/libfdA.so.1", "libfdA.so.1") is None:
        pytest.skip("cannot build a 32-bit object here (gcc -m32 -c / ld -m elf_i386 unavailable)")
    _lib(t, "b/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"])
    return Layout(root, ("libfdA.so.1",), llp=f"{t}/a:{t}/b")


def wrong_machine_copy_skipped(t):
    bad = Path(_lib(t, "a/libfdA.so.1"))
    with open(bad, "r+b") as fh:  # e_machine := EM_AARCH64
        fh.seek(18)
        fh.write((183).to_bytes(2, "little"))
    _lib(t, "b/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"])
    return Layout(root, ("libfdA.so.1",), llp=f"{t}/a:{t}/b")


def text_file_earlier_is_fatal(t):
    (t / "a").mkdir(parents=True)
    (t / "a/libfdA.so.1").write_text("INPUT(libfdA.so.1)\n" * 10)
    _lib(t, "b/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"])
    return Layout(root, ("libfdA.so.1",), llp=f"{t}/a:{t}/b", fail={"libfdA.so.1": "invalid ELF header"})


def empty_file_earlier_is_fatal(t):
    (t / "a").mkdir(parents=True)
    (t / "a/libfdA.so.1").write_bytes(b"")
    _lib(t, "b/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"])
    return Layout(root, ("libfdA.so.1",), llp=f"{t}/a:{t}/b", fail={"libfdA.so.1": "file too short"})


def broken_symlink_skipped(t):
    (t / "a").mkdir(parents=True)
    os.symlink(t / "nowhere/libfdA.so.1", t / "a/libfdA.so.1")
    _lib(t, "b/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"])
    return Layout(root, ("libfdA.so.1",), llp=f"{t}/a:{t}/b")


def dependency_of_dependency(t):
    _lib(t, "app/libfdMid.so.1", needed=["libfdA.so.1"], rpath="$ORIGIN")
    _lib(t, "app/libfdA.so.1", needed=["libfdB.so.1"], runpath="$ORIGIN/sub")
    _lib(t, "app/sub/libfdB.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdMid.so.1"], rpath="$ORIGIN")
    return Layout(root, ("libfdMid.so.1", "libfdA.so.1", "libfdB.so.1"))


def dlopen_from_library_uses_its_runpath(t):
    # TensorFlow-like: the framework library dlopen()s cuDNN by name, found through its own RUNPATH.
    _lib(t, "nvidia/cudnn/lib/libfdcudnn.so.9", functions={"cudnnGetVersion": 90100})
    root = _lib(t, "tf/libfdframework.so.2", c_source=DLOPEN_SRC, runpath="$ORIGIN/../nvidia/cudnn/lib")
    return Layout(root, ("libfdcudnn.so.9",), dlopen="libfdcudnn.so.9")


def dlopen_from_library_llp_beats_runpath(t):
    _lib(t, "nvidia/cudnn/lib/libfdcudnn.so.9", functions={"cudnnGetVersion": 90100})
    _lib(t, "opt/old/libfdcudnn.so.9", functions={"cudnnGetVersion": 80900})
    root = _lib(t, "tf/libfdframework.so.2", c_source=DLOPEN_SRC, runpath="$ORIGIN/../nvidia/cudnn/lib")
    return Layout(root, ("libfdcudnn.so.9",), dlopen="libfdcudnn.so.9", llp=str(t / "opt/old"))


def dlopen_from_library_rpath_beats_llp(t):
    _lib(t, "nvidia/cudnn/lib/libfdcudnn.so.9", functions={"cudnnGetVersion": 90100})
    _lib(t, "opt/old/libfdcudnn.so.9", functions={"cudnnGetVersion": 80900})
    root = _lib(t, "torch/lib/libfdtorch.so", c_source=DLOPEN_SRC, rpath="$ORIGIN/../../nvidia/cudnn/lib")
    return Layout(root, ("libfdcudnn.so.9",), dlopen="libfdcudnn.so.9", llp=str(t / "opt/old"))


def dlopen_sub_library_via_shim_rpath(t):
    # cuDNN 9 shape: the shim (DT_RPATH $ORIGIN) pulls the graph library next to it; LD_LIBRARY_PATH loses.
    _lib(t, "cudnn/lib/libfdgraph.so.9", runpath="$ORIGIN")
    _lib(t, "old/libfdgraph.so.9")
    _lib(t, "cudnn/lib/libfdshim.so.9", needed=["libfdgraph.so.9"], rpath="$ORIGIN")
    root = _lib(t, "tf/libfdframework.so.2", c_source=DLOPEN_SRC, runpath="$ORIGIN/../cudnn/lib")
    return Layout(root, ("libfdshim.so.9", "libfdgraph.so.9"), dlopen="libfdshim.so.9", llp=str(t / "old"))


def glibc_hwcaps_subdir_preferred(t):
    env = loader_env_from_host(Host(system=THIS_MACHINE))
    if "glibc-hwcaps/x86-64-v2" not in env.hwcaps_subdirs:
        pytest.skip("this loader/CPU does not search glibc-hwcaps/x86-64-v2")
    _lib(t, "llp/libfdA.so.1")
    _lib(t, "llp/glibc-hwcaps/x86-64-v2/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"])
    return Layout(root, ("libfdA.so.1",), llp=str(t / "llp"))


def legacy_platform_subdir_preferred(t):
    env = loader_env_from_host(Host(system=THIS_MACHINE))
    if "x86_64" not in env.hwcaps_subdirs:
        pytest.skip("this loader does not search legacy hwcaps subdirectories (glibc >= 2.37)")
    _lib(t, "deps/libfdA.so.1")
    _lib(t, "deps/x86_64/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"], runpath="$ORIGIN/../deps")
    return Layout(root, ("libfdA.so.1",))


def platform_and_lib_tokens(t):
    # $PLATFORM is ld.so's dl_platform ("haswell" on AVX2 CPUs with glibc 2.36), not the kernel's AT_PLATFORM.
    _lib(t, f"app/{loader_env_from_host(Host(system=THIS_MACHINE)).platform}/libfdA.so.1")
    _lib(t, "app/lib/x86_64-linux-gnu/libfdB.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1", "libfdB.so.1"], rpath="$ORIGIN/$PLATFORM:$ORIGIN/${LIB}")
    return Layout(root, ("libfdA.so.1", "libfdB.so.1"))


def executable_rpath_searched_last(t):
    _lib(t, "bin/exelib/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"])
    return Layout(root, ("libfdA.so.1",), exe_dir=str(t / "bin"),
                  exe_link_args=("-Wl,--disable-new-dtags", "-Wl,-rpath,$ORIGIN/exelib"))


def system_cache_entry(t):
    root = _lib(t, "app/libroot.so", needed=["libz.so.1"])
    if not any(e.soname == "libz.so.1" for e in read_ld_cache(Host(system=THIS_MACHINE)).entries):
        pytest.skip("libz.so.1 is not in this machine's ld.so.cache")
    return Layout(root, ("libz.so.1",))


def ld_library_path_beats_cache(t):
    cached = next((e.path for e in read_ld_cache(Host(system=THIS_MACHINE)).entries if e.soname == "libz.so.1"), None)
    if cached is None:
        pytest.skip("libz.so.1 is not in this machine's ld.so.cache")
    (t / "llp").mkdir(parents=True)
    shutil.copy(cached, t / "llp/libz.so.1")
    root = _lib(t, "app/libroot.so", needed=["libz.so.1"])
    return Layout(root, ("libz.so.1",), llp=str(t / "llp"))


def nodeflib_skips_cache_and_default_dirs(t):
    # ld -z nodefaultlib sets DF_1_NODEFLIB: libz.so.1 (in the cache, in /lib/...) is then not found.
    root = _lib(t, "app/libroot.so", needed=["libz.so.1"], link_args=["-Wl,-z,nodefaultlib"])
    return Layout(root, ("libz.so.1",), fail={"libz.so.1": "libz.so.1: cannot open shared object file"})


def nodeflib_keeps_runpath(t):
    _lib(t, "deps/libfdA.so.1")
    root = _lib(t, "app/libroot.so", needed=["libfdA.so.1"], runpath="$ORIGIN/../deps",
                link_args=["-Wl,-z,nodefaultlib"])
    return Layout(root, ("libfdA.so.1",))


def default_dirs_without_cache_entry(t):
    host = Host(system=THIS_MACHINE)
    keys = {e.soname for e in read_ld_cache(host).entries}
    name = None
    for d in default_dirs_for(host):
        if not os.path.isdir(d):
            continue
        for f in sorted(os.listdir(d)):
            p = os.path.join(d, f)
            if f.startswith("libz") and ".so." in f and f not in keys and os.path.isfile(p) and not os.path.islink(p):
                name = f
                break
        if name:
            break
    if name is None:
        pytest.skip("no library file in the default dirs that lacks a cache entry")
    root = _lib(t, "app/libroot.so", needed=[name])
    return Layout(root, (name,))


LAYOUTS = [
    rpath_origin, runpath_origin, rpath_beats_ld_library_path, ld_library_path_beats_runpath,
    rpath_inherited_by_dependency, runpath_not_inherited, requester_runpath_disables_inherited_rpath,
    ancestor_with_runpath_is_transparent, ld_library_path_order, ld_library_path_semicolon,
    empty_ld_library_path_entry_is_cwd, relative_ld_library_path_entry, origin_through_symlinked_dir,
    origin_of_dependency_found_via_dotdot, missing_everywhere, missing_rpath_entry_then_found,
    wrong_class_copy_skipped, wrong_machine_copy_skipped, text_file_earlier_is_fatal,
    empty_file_earlier_is_fatal, broken_symlink_skipped, dependency_of_dependency,
    dlopen_from_library_uses_its_runpath, dlopen_from_library_llp_beats_runpath,
    dlopen_from_library_rpath_beats_llp, dlopen_sub_library_via_shim_rpath, platform_and_lib_tokens,
    glibc_hwcaps_subdir_preferred, legacy_platform_subdir_preferred,
    executable_rpath_searched_last, system_cache_entry, ld_library_path_beats_cache,
    default_dirs_without_cache_entry, nodeflib_skips_cache_and_default_dirs, nodeflib_keeps_runpath,
]


def _run_oracle(tmp: Path, lay: Layout) -> tuple[dict[str, str], dict[str, str], str | None, str]:
    exe_dir = Path(lay.exe_dir) if lay.exe_dir else tmp / "oracle"
    exe = build_exe(exe_dir / "oracle", ORACLE, link_args=lay.exe_link_args)
    env = {"PATH": "/usr/bin:/bin"}
    if lay.llp is not None:
        env["LD_LIBRARY_PATH"] = lay.llp
    argv = [str(exe), lay.root] + ([lay.dlopen] if lay.dlopen else [])
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=lay.cwd or str(tmp), timeout=30)
    assert proc.returncode == 0, proc.stderr
    pre, mapped, error = {}, {}, None
    for line in proc.stdout.splitlines():
        tag, _, name = line.partition(" ")
        if tag == "E":
            error = name
            continue
        info = read_elf(Host(system=THIS_MACHINE), os.path.join(lay.cwd or str(tmp), name))
        into = pre if tag == "P" else mapped
        into[info.soname or os.path.basename(name)] = name
        if tag == "L":  # a file requested by its file name rather than its SONAME
            into.setdefault(os.path.basename(name), name)
    return pre, mapped, error, str(exe)


@pytest.mark.parametrize("make", LAYOUTS, ids=[f.__name__ for f in LAYOUTS])
def test_model_matches_glibc(make, tmp_path):
    t = tmp_path / "tree"
    t.mkdir()
    lay = make(t)
    pre, mapped, error, exe = _run_oracle(tmp_path, lay)
    cwd = lay.cwd or str(tmp_path)
    environ = {"LD_LIBRARY_PATH": lay.llp} if lay.llp is not None else {}
    host = Host(environ=environ, system=THIS_MACHINE)
    # Everything about the loader ($PLATFORM, $LIB, default and hwcaps dirs) comes from the model's own
    # detection; only what the program had already mapped is taken from the oracle.
    env = replace(loader_env_from_host(host, cwd=cwd, executable=exe), preloaded=pre)
    model = resolve_tree(host, lay.root, env)
    if lay.dlopen:
        # The root was mapped by the program; the dlopen() comes from code inside the root.
        loaded = {**pre, **{k: r.path for k, r in model.items() if r.path}}
        root_info = read_elf(host, lay.root)
        loaded[root_info.soname or lay.root] = lay.root
        sub_env = replace(env, preloaded=loaded)
        top = resolve(host, lay.dlopen, [root_info], sub_env)
        model[lay.dlopen] = top
        if top.path and top.source != "already-loaded":
            loaded[lay.dlopen] = top.path
            for k, r in resolve_tree(host, top.path, replace(env, preloaded=loaded),
                                     root_loader_chain=[root_info]).items():
                model.setdefault(k, r)

    for soname in lay.check:
        res = model.get(soname)
        assert res is not None, f"model never resolved {soname}: {sorted(model)}"
        why = "\n".join(res.explain())
        if soname in lay.fail:
            assert error is not None and lay.fail[soname] in error, f"glibc: {error!r}"
            assert res.path is None, why
            assert lay.fail[soname] in res.error, why
            continue
        assert error is None, f"glibc failed unexpectedly: {error}\nmodel:\n{why}"
        real = mapped.get(soname)
        assert real is not None, f"glibc did not map {soname}: {mapped}"
        # The model names the file exactly as the loader records it (l_name, '..' and links kept); a
        # relative l_name (an empty or relative search element) is reported joined to the cwd.
        expected = real if real.startswith("/") else os.path.normpath(os.path.join(cwd, real))
        assert res.path == expected, f"glibc mapped {real}\nmodel:\n{why}"
