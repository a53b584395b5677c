"""ELF facts from real gcc-built objects, and every way a file can fail to be one."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fixdnn.facts import elf as elf_mod
from fixdnn.facts.elf import exports_symbol, read_elf
from fixdnn.target.host import Host
from tests.envkit.elfkit import build_so

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def test_reads_soname_needed_rpath(tmp_path):
    p = build_so(tmp_path / "libt.so.1", "libt.so.1", needed=["libcudnn.so.9", "libcudart.so.13"],
                 rpath="$ORIGIN/../../nvidia/cudnn/lib::$ORIGIN")
    info = read_elf(Host(), str(p))
    assert info.error is None
    assert info.path == str(p)
    assert info.soname == "libt.so.1"
    assert info.needed == ("libcudnn.so.9", "libcudart.so.13", "libc.so.6")  # in link order
    assert info.rpath == ("$ORIGIN/../../nvidia/cudnn/lib", "", "$ORIGIN")  # empty element kept
    assert info.runpath == ()
    assert (info.elf_class, info.machine) == (64, "EM_X86_64")
    assert info.nodeflib is False


def test_reads_runpath_and_nodeflib(tmp_path):
    p = build_so(tmp_path / "libr.so", "libr.so", runpath="$ORIGIN/lib", link_args=["-Wl,-z,nodefaultlib"])
    info = read_elf(Host(), str(p))
    assert info.runpath == ("$ORIGIN/lib",) and info.rpath == ()
    assert info.nodeflib is True


def test_stripped_section_headers_fall_back_to_pt_dynamic(tmp_path):
    p = build_so(tmp_path / "libs.so.2", "libs.so.2", needed=["libdep.so.1"], runpath="$ORIGIN")
    with open(p, "r+b") as fh:  # e_shoff = 0, e_shnum = 0, e_shstrndx = 0: no section headers at all
        fh.seek(0x28)
        fh.write(b"\0" * 8)
        fh.seek(0x3C)
        fh.write(b"\0" * 4)
    info = read_elf(Host(), str(p))
    assert info.error is None, info.error
    assert info.soname == "libs.so.2" and info.needed == ("libdep.so.1", "libc.so.6") and info.runpath == ("$ORIGIN",)


def test_32bit_object(tmp_path):
    (tmp_path / "x.c").write_text("int f(void) { return 1; }\n")
    try:
        subprocess.run(["gcc", "-m32", "-fPIC", "-c", str(tmp_path / "x.c"), "-o", str(tmp_path / "x.o")],
                       check=True, capture_output=True)
        subprocess.run(["ld", "-m", "elf_i386", "-shared", "-soname", "lib32.so.1", "-o", str(tmp_path / "lib32.so.1"),
                        str(tmp_path / "x.o")], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no 32-bit toolchain (gcc -m32 -c + ld -m elf_i386)")
    info = read_elf(Host(), str(tmp_path / "lib32.so.1"))
    assert (info.elf_class, info.machine, info.soname, info.error) == (32, "EM_386", "lib32.so.1", None)


def test_exports_symbol(tmp_path):
    p = str(build_so(tmp_path / "libcudnn.so.9", "libcudnn.so.9", functions={"cudnnGetVersion": 90100}))
    host = Host()
    assert exports_symbol(host, p, "cudnnGetVersion") is True
    assert exports_symbol(host, p, "cudnnCreate") is False
    assert exports_symbol(host, p, "malloc") is False  # only *defined* symbols count
    (tmp_path / "text.so").write_text("not elf")
    assert exports_symbol(host, str(tmp_path / "text.so"), "cudnnGetVersion") is None
    assert exports_symbol(host, str(tmp_path / "missing.so"), "x") is None


def _errors(tmp_path: Path) -> dict[str, str]:
    good = build_so(tmp_path / "good.so", "libgood.so.1", needed=["libc.so.6"])
    data = good.read_bytes()
    (tmp_path / "cut_header.so").write_bytes(data[:40])
    (tmp_path / "cut_half.so").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.so").write_bytes(b"")
    (tmp_path / "text.so").write_text("/* GNU ld script */\nINPUT(libfoo.so.1)\n")
    (tmp_path / "dir.so").mkdir()
    os.symlink(tmp_path / "nowhere.so", tmp_path / "broken.so")
    os.symlink("loop.so", tmp_path / "loop.so")
    os.mkfifo(tmp_path / "fifo.so")  # must not block
    return {name: read_elf(Host(), str(tmp_path / name)).error for name in
            ["cut_header.so", "cut_half.so", "empty.so", "text.so", "dir.so", "broken.so", "loop.so", "fifo.so",
             "missing.so"]}


def test_bad_files_are_facts_with_one_line_errors(tmp_path):
    errors = _errors(tmp_path)
    assert errors["empty.so"] == "empty file"
    assert errors["text.so"] == "not an ELF file"
    assert errors["dir.so"] == "is a directory"
    assert errors["broken.so"].startswith("broken symlink")
    assert errors["loop.so"].startswith("broken symlink")
    assert errors["fifo.so"] == "not a regular file"
    assert errors["missing.so"] == "No such file or directory"
    assert errors["cut_header.so"].startswith("malformed ELF")
    # Cut in half: the dynamic section lies past the end (gcc puts it late in the file).
    assert errors["cut_half.so"] is not None
    for name, err in errors.items():
        assert err and "\n" not in err and "Traceback" not in err, (name, err)


def test_unreadable_file(tmp_path):
    p = build_so(tmp_path / "locked" / "libl.so", "libl.so")
    os.chmod(tmp_path / "locked", 0o000)  # no x on the directory: the file cannot be reached
    try:
        if os.access(p, os.R_OK):
            pytest.skip("running with CAP_DAC_OVERRIDE (root): permissions do not stop reads here")
        info = read_elf(Host(), str(p))
        assert info.error == "Permission denied"
    finally:
        os.chmod(tmp_path / "locked", 0o755)


def test_cache_sees_a_replaced_file(tmp_path):
    p = tmp_path / "libv.so"
    build_so(p, "libv.so.1")
    assert read_elf(Host(), str(p)).soname == "libv.so.1"
    tmp = tmp_path / "new.so"
    build_so(tmp, "libv.so.2", needed=["libz.so.1"])
    os.replace(tmp, p)
    assert read_elf(Host(), str(p)).soname == "libv.so.2"


def test_root_resolves_absolute_symlinks_inside_the_root(tmp_path):
    root = tmp_path / "image"
    build_so(root / "opt/cudnn/lib/libcudnn.so.9.1.0", "libcudnn.so.9", functions={"cudnnGetVersion": 90100})
    (root / "usr/lib").mkdir(parents=True)
    os.symlink("/opt/cudnn/lib/libcudnn.so.9.1.0", root / "usr/lib/libcudnn.so.9")  # absolute: inside the image
    host = Host(root=root)
    info = read_elf(host, "/usr/lib/libcudnn.so.9")
    assert info.error is None and info.soname == "libcudnn.so.9" and info.path == "/usr/lib/libcudnn.so.9"
    assert exports_symbol(host, "/usr/lib/libcudnn.so.9", "cudnnGetVersion") is True
    # Without the root the same absolute link points at the real /opt, which has no such file.
    assert read_elf(Host(), str(root / "usr/lib/libcudnn.so.9")).error is not None


def _with_pyelftools(path):
    """The same facts through pyelftools alone (the fallback), to check the struct fast path against."""
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as fh:
        elf = ELFFile(fh)
        tags = elf_mod._dynamic_tags(elf)
        get = lambda kind, attr: [getattr(t, attr) for t in tags if t.entry.d_tag == kind]  # noqa: E731
        return (next(iter(get("DT_SONAME", "soname")), None), tuple(get("DT_NEEDED", "needed")),
                tuple(":".join(get("DT_RPATH", "rpath")).split(":")) if get("DT_RPATH", "rpath") else (),
                tuple(":".join(get("DT_RUNPATH", "runpath")).split(":")) if get("DT_RUNPATH", "runpath") else (),
                elf.elfclass, elf["e_machine"])


@pytest.mark.parametrize("kw", [
    dict(soname="libcudnn.so.9", rpath="$ORIGIN", needed=["libcudnn_graph.so.9", "libm.so.6"]),
    dict(soname="libx.so.1", runpath="$ORIGIN/../a::$ORIGIN/b"),
    dict(soname=None, needed=["liba.so", "libb.so.2"]),
    dict(soname="libz.so", link_args=["-Wl,-z,nodefaultlib"]),
])
def test_struct_fast_path_agrees_with_pyelftools(tmp_path, kw):
    path = build_so(tmp_path / "lib.so", **kw)
    with open(path, "rb") as fh:
        fast = elf_mod._fast(fh)
    assert (fast.soname, fast.needed, fast.rpath, fast.runpath, fast.elf_class, fast.machine) == _with_pyelftools(path)
    assert fast.nodeflib == ("-Wl,-z,nodefaultlib" in kw.get("link_args", ()))
