"""The loader model's own behaviour: evidence chains, unsafe entries, cache step, --root trees.

Search *order* is checked against the real glibc in tests/e2e/test_loader_vs_glibc.py; these tests cover
what the oracle cannot show (the explanation, a private ld.so.cache, a --root image) on real files.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace

import pytest

from fixdnn.facts.elf import ElfInfo, read_elf
from fixdnn.facts.ldcache import CacheEntry
from fixdnn.facts.loader import LoaderEnv, expand_dst, resolve, resolve_tree
from fixdnn.target.host import Host
from tests.envkit.elfkit import build_so

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

NO_SYSTEM = dict(default_dirs=(), ld_cache=())


def _torch_tree(t):
    """torch-like: libtorch_cuda.so with DT_RPATH $ORIGIN/../../nvidia/cudnn/lib; cuDNN missing there."""
    build_so(t / "site/torch/lib/libtorch_cuda.so", "libtorch_cuda.so", needed=["libcudnn.so.9"],
             rpath="$ORIGIN/../../nvidia/cudnn/lib:$ORIGIN")
    build_so(t / "opt/old/libcudnn.so.9", "libcudnn.so.9", functions={"cudnnGetVersion": 90100})
    return str(t / "site/torch/lib/libtorch_cuda.so")


def test_explain_reads_as_evidence(tmp_path):
    lib = _torch_tree(tmp_path)
    env = LoaderEnv(ld_library_path=(str(tmp_path / "opt/old"),), cwd=str(tmp_path), **NO_SYSTEM)
    res = resolve(Host(), "libcudnn.so.9", [read_elf(Host(), lib)], env)
    assert res.path == f"{tmp_path}/opt/old/libcudnn.so.9" and res.source == "LD_LIBRARY_PATH"
    lines = res.explain()
    assert lines[0] == f"libcudnn.so.9 for {lib} → {tmp_path}/opt/old/libcudnn.so.9 (via LD_LIBRARY_PATH)"
    torch_lib = f"{tmp_path}/site/torch/lib"
    assert lines[1] == (f"  DT_RPATH[0] of {lib}: $ORIGIN/../../nvidia/cudnn/lib → "
                        f"{torch_lib}/../../nvidia/cudnn/lib (= {tmp_path}/site/nvidia/cudnn/lib): absent")
    assert lines[2] == f"  DT_RPATH[1] of {lib}: $ORIGIN → {torch_lib}: absent"
    assert lines[3] == f"  LD_LIBRARY_PATH[0] → {tmp_path}/opt/old: found libcudnn.so.9"
    assert [s.source for s in res.chain] == ["DT_RPATH", "DT_RPATH", "LD_LIBRARY_PATH"]


def test_not_found_names_every_place_looked(tmp_path):
    lib = _torch_tree(tmp_path)
    env = LoaderEnv(cwd=str(tmp_path), default_dirs=(str(tmp_path / "usr/lib"),), ld_cache=())
    res = resolve(Host(), "libcudnn.so.9", [read_elf(Host(), lib)], env)
    assert res.path is None and res.source is None
    assert res.error == "libcudnn.so.9: cannot open shared object file: No such file or directory"
    assert [(s.source, s.outcome) for s in res.chain] == [
        ("DT_RPATH", "absent"), ("DT_RPATH", "absent"), ("ld.so.cache", "absent"), ("default-dirs", "absent")]
    assert "not loaded" in res.explain()[0]


def test_empty_and_relative_ld_library_path_entries_are_unsafe(tmp_path):
    build_so(tmp_path / "work/libfdA.so.1", "libfdA.so.1")
    env = LoaderEnv(ld_library_path=("", "rel", "/abs"), cwd=str(tmp_path / "work"), **NO_SYSTEM)
    res = resolve(Host(), "libfdA.so.1", [], env)
    assert res.path == f"{tmp_path}/work/libfdA.so.1" and res.source == "LD_LIBRARY_PATH"
    unsafe = [s for s in res.chain if s.outcome == "unsafe"]
    assert len(unsafe) == 2 and unsafe[0].directory == f"{tmp_path}/work"
    assert "empty entry means the current directory" in unsafe[0].detail
    assert LoaderEnv.split_ld_library_path("a;b::c") == ("a", "b", "", "c")
    assert LoaderEnv.split_ld_library_path("") == () and LoaderEnv.split_ld_library_path(None) == ()


def test_rpath_ignored_when_object_also_has_runpath(tmp_path):
    # ld cannot emit both tags, but a hand-linked object can: the loader then drops DT_RPATH.
    build_so(tmp_path / "r/libfdA.so.1", "libfdA.so.1")
    both = ElfInfo(path=str(tmp_path / "libboth.so"), rpath=(str(tmp_path / "r"),), runpath=("/nowhere",),
                   elf_class=64, machine="EM_X86_64")
    res = resolve(Host(), "libfdA.so.1", [both], LoaderEnv(cwd="/", **NO_SYSTEM))
    assert res.path is None
    assert res.chain[0].outcome == "skipped" and "ignored: it also has DT_RUNPATH" in res.chain[0].detail


def test_already_loaded_by_soname_and_by_same_file(tmp_path):
    a = build_so(tmp_path / "a/libfdA.so.1", "libfdA.so.1")
    os.symlink(a, tmp_path / "a/libfdA.so")
    env = LoaderEnv(ld_library_path=(str(tmp_path / "a"),), cwd="/", preloaded={"libfdA.so.1": str(a)}, **NO_SYSTEM)
    res = resolve(Host(), "libfdA.so.1", [], env)
    assert (res.path, res.source, len(res.chain)) == (str(a), "already-loaded", 1)
    other = resolve(Host(), "libfdA.so", [], env)  # another name, same inode: not mapped twice
    assert (other.path, other.source) == (str(a), "already-loaded")
    assert "same file as the already loaded libfdA.so.1" in other.chain[-1].detail


def test_cache_step_uses_first_matching_entry_only(tmp_path):
    good = build_so(tmp_path / "c2/libfdA.so.1", "libfdA.so.1")
    cache = (
        CacheEntry("libfdA.so.1", str(tmp_path / "c0/libfdA.so.1"), 0x0003),  # i386 flags: not for us
        CacheEntry("libfdA.so.1", str(tmp_path / "c1/libfdA.so.1"), 0x0303),  # stale: file is gone
        CacheEntry("libfdA.so.1", str(good), 0x0303),
    )
    env = LoaderEnv(cwd="/", ld_cache=cache, default_dirs=(str(tmp_path / "c2"),))
    res = resolve(Host(), "libfdA.so.1", [], env)
    # glibc tries one cache entry; when that file is gone it falls through to the default dirs.
    assert [(s.source, s.directory, s.outcome) for s in res.chain] == [
        ("ld.so.cache", str(tmp_path / "c1"), "absent"),
        ("default-dirs", str(tmp_path / "c2"), "found"),
    ]
    assert res.source == "default-dirs"


def test_nodeflib_skips_cache_and_default_dirs(tmp_path):
    lib = build_so(tmp_path / "libnd.so", "libnd.so", needed=["libfdA.so.1"], link_args=["-Wl,-z,nodefaultlib"])
    build_so(tmp_path / "sys/libfdA.so.1", "libfdA.so.1")
    env = LoaderEnv(cwd="/", default_dirs=(str(tmp_path / "sys"),),
                    ld_cache=(CacheEntry("libfdA.so.1", str(tmp_path / "sys/libfdA.so.1"), 0x303),))
    res = resolve(Host(), "libfdA.so.1", [read_elf(Host(), str(lib))], env)
    assert res.path is None
    assert [(s.source, s.outcome) for s in res.chain] == [("ld.so.cache", "skipped"), ("default-dirs", "skipped")]


def test_directory_and_symlink_loop_candidates(tmp_path):
    (tmp_path / "d/libfdA.so.1").mkdir(parents=True)
    build_so(tmp_path / "ok/libfdA.so.1", "libfdA.so.1")
    env = LoaderEnv(ld_library_path=(str(tmp_path / "d"), str(tmp_path / "ok")), cwd="/", **NO_SYSTEM)
    res = resolve(Host(), "libfdA.so.1", [], env)
    assert res.path is None and res.error.endswith("cannot read file data: Is a directory")
    os.rmdir(tmp_path / "d/libfdA.so.1")
    os.symlink("libfdA.so.1", tmp_path / "d/libfdA.so.1")  # ELOOP: glibc abandons the rest of this list
    res = resolve(Host(), "libfdA.so.1", [], replace(env, default_dirs=(str(tmp_path / "ok"),)))
    assert [(s.source, s.outcome) for s in res.chain] == [
        ("LD_LIBRARY_PATH", "stopped"), ("ld.so.cache", "absent"), ("default-dirs", "found")]


def test_expand_dst():
    env = LoaderEnv(lib="lib64", platform="haswell")
    assert expand_dst("$ORIGIN/../lib", "/x/y", env) == "/x/y/../lib"
    assert expand_dst("${ORIGIN}/a:$LIB/$PLATFORM", "/o", env) == "/o/a:lib64/haswell"
    assert expand_dst("$ORIGINAL/x", "/o", env) == "$ORIGINAL/x"  # not a DST: an identifier follows
    assert expand_dst("$ORIGIN/x", None, env) is None


def test_resolve_tree_breadth_first_under_root(tmp_path):
    """--root: an image whose shim is an absolute symlink inside the image, found via the image's cache."""
    root = tmp_path / "image"
    build_so(root / "opt/cudnn/lib/libcudnn.so.9.1.0", "libcudnn.so.9", needed=["libcudnn_graph.so.9"], rpath="$ORIGIN")
    build_so(root / "opt/cudnn/lib/libcudnn_graph.so.9", "libcudnn_graph.so.9", functions={"cudnnGetVersion": 90100})
    (root / "usr/lib").mkdir(parents=True)
    os.symlink("/opt/cudnn/lib/libcudnn.so.9.1.0", root / "usr/lib/libcudnn.so.9")
    build_so(root / "app/libapp.so", "libapp.so", needed=["libcudnn.so.9"])
    host = Host(root=root)
    env = LoaderEnv(cwd="/", ld_cache=(CacheEntry("libcudnn.so.9", "/usr/lib/libcudnn.so.9", 0x303),),
                    default_dirs=("/usr/lib",))
    tree = resolve_tree(host, "/app/libapp.so", env)
    assert tree["libcudnn.so.9"].path == "/usr/lib/libcudnn.so.9"
    assert tree["libcudnn.so.9"].source == "ld.so.cache"
    # $ORIGIN of the shim is /usr/lib (its name as loaded), not /opt/cudnn/lib where the link points:
    graph = tree["libcudnn_graph.so.9"]
    assert graph.chain[0].detail.startswith("DT_RPATH[0] of /usr/lib/libcudnn.so.9: $ORIGIN")
    assert graph.chain[0].directory == "/usr/lib" and graph.chain[0].outcome == "absent"
    assert graph.path is None  # the graph library sits only next to the link target
    assert set(resolve_tree(host, "/app/libapp.so", env, wanted={"libcudnn.so.9"})) == {"libcudnn.so.9"}
