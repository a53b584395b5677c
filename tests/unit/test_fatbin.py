"""The fat binary reader against real nvcc output (tests/envkit/cuda.py): architectures, PTX versions,
arch-specific and family targets, compressed entries, damaged files, bounded reads, the cache."""

from __future__ import annotations

import os
import shutil

import pytest

from fixdnn.base import filecache
from fixdnn.facts import fatbin
from fixdnn.target.host import Host
from tests.envkit.cuda import fatbin_so
from tests.envkit.elfkit import build_so


@pytest.fixture(scope="module")
def libs(tmp_path_factory):
    d = tmp_path_factory.mktemp("fatbins")
    return {
        "mixed": fatbin_so(d / "mixed.so", ["sm_86", "sm_90", "compute_120"]),
        "variants": fatbin_so(d / "variants.so", ["sm_90a", "sm_100f", "compute_75"], compress="size"),
        "ptx_only": fatbin_so(d / "ptx.so", ["compute_80"]),
    }


def test_sass_and_ptx_entries(libs):
    k = fatbin.read(Host(), str(libs["mixed"]))
    assert k.error is None
    assert k.sass == ("sm_86", "sm_90")
    assert k.ptx == ("compute_120",)
    assert k.ptx_isa == "9.0"  # nvcc 13.0 writes PTX ISA 9.0
    assert k.entries >= 3


def test_arch_specific_family_and_compressed_entries(libs):
    k = fatbin.read(Host(), str(libs["variants"]))
    assert k.error is None
    assert k.sass == ("sm_90a", "sm_100f")
    assert k.ptx == ("compute_75",)


def test_ptx_only_build(libs):
    k = fatbin.read(Host(), str(libs["ptx_only"]))
    assert (k.sass, k.ptx, k.error) == ((), ("compute_80",), None)


def test_a_library_without_device_code_has_no_entries(tmp_path):
    plain = build_so(tmp_path / "plain.so", "libplain.so")
    k = fatbin.read(Host(), str(plain))
    assert (k.sass, k.ptx, k.entries, k.error) == ((), (), 0, None)


def test_unreadable_and_foreign_files_are_facts(tmp_path):
    (tmp_path / "text").write_text("not elf")
    assert fatbin.read(Host(), str(tmp_path / "text")).error == "not an ELF file"
    assert "No such file" in fatbin.read(Host(), str(tmp_path / "absent.so")).error


def _section(path):
    with open(path, "rb") as fh:
        return fatbin.fatbin_sections(fh.fileno())


def test_truncated_fat_binary_is_an_error_not_a_crash(libs, tmp_path):
    (offset, size), = _section(libs["mixed"])
    cut = tmp_path / "cut.so"
    with open(libs["mixed"], "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(offset + size // 2))
    k = fatbin.read(Host(), str(cut))
    assert k.error and ("truncated" in k.error or "runs past" in k.error), k.error


def test_damaged_entry_size_is_reported(libs, tmp_path):
    (offset, _), = _section(libs["mixed"])
    bad = tmp_path / "bad.so"
    shutil.copyfile(libs["mixed"], bad)
    with open(bad, "r+b") as fh:  # first entry's payload size: far past its container
        fh.seek(offset + 16 + 8)
        fh.write((1 << 40).to_bytes(8, "little"))
    assert "runs past its container" in fatbin.read(Host(), str(bad)).error


def test_padding_between_containers_is_skipped(libs, tmp_path):
    (offset, size), = _section(libs["mixed"])
    with open(libs["mixed"], "rb") as fh:
        fh.seek(offset)
        raw = fh.read(size)
    first = 16 + int.from_bytes(raw[8:16], "little")
    assert raw[first:first + 4] == fatbin._MAGIC_BYTES, "nvcc wrote more than one container"
    padded = raw[:first] + b"\0" * 24 + raw[first:]
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 8 + padded)
    fd = os.open(blob, os.O_RDONLY)
    try:
        seen, isa, _, containers = fatbin.read_section(fd, 8, len(padded))
    finally:
        os.close(fd)
    assert (sorted(seen), isa, containers) == (["compute_120", "sm_86", "sm_90"], "9.0", 2)


def test_reads_headers_only(libs, monkeypatch):
    """Payloads are skipped: the bytes read are a small fraction of the fat binary."""
    (offset, size), = _section(libs["mixed"])
    read = []
    real = os.pread
    monkeypatch.setattr(fatbin.os, "pread", lambda fd, n, at: read.append((at, n)) or real(fd, n, at))
    k = fatbin.read(Host(), str(libs["mixed"]))
    assert k.sass == ("sm_86", "sm_90")
    inside = sum(n for at, n in read if offset <= at < offset + size)
    assert inside <= 64 * (k.entries + 2) and inside < size / 4, (inside, size)


def test_read_through_a_root(libs, tmp_path):
    root = tmp_path / "image"
    (root / "opt/lib").mkdir(parents=True)
    shutil.copyfile(libs["mixed"], root / "opt/lib/k.so")
    k = fatbin.read(Host(root=root), "/opt/lib/k.so")
    assert (k.path, k.sass) == ("/opt/lib/k.so", ("sm_86", "sm_90"))


def test_cache_by_file_identity(libs, tmp_path, monkeypatch):
    lib = tmp_path / "k.so"
    shutil.copyfile(libs["mixed"], lib)
    cache_file = tmp_path / "state" / fatbin.CACHE_NAME
    cache_file.parent.mkdir()
    first = fatbin.Cache(cache_file)
    assert first.images(Host(), str(lib)).sass == ("sm_86", "sm_90")
    first.save()
    filecache._MEMO.clear()
    calls = []
    monkeypatch.setattr(fatbin, "read", lambda host, path: calls.append(path) or pytest.fail("read again"))
    again = fatbin.Cache(cache_file)  # a new process: from the file
    assert again.images(Host(), str(lib)).sass == ("sm_86", "sm_90")
    assert calls == []
    monkeypatch.undo()
    filecache._MEMO.clear()
    shutil.copyfile(libs["ptx_only"], tmp_path / "new.so")
    os.replace(tmp_path / "new.so", lib)  # replaced the way pip does: a new inode
    assert fatbin.Cache(cache_file).images(Host(), str(lib)).ptx == ("compute_80",)


def test_archs_of_a_few_files_are_partial(tmp_path):
    """One container per compiled file: an arch that only a minority carries is not the build's (torch's
    libtorch_cuda.so has sm_90a / sm_100a in a few attention kernels only)."""
    lib = fatbin_so(tmp_path / "k.so", ["sm_80", "sm_90"], units=(("sm_80", "sm_90"), ("sm_80", "sm_90", "sm_90a")))
    k = fatbin.read(Host(), str(lib))
    assert (k.sass, k.partial, k.containers) == (("sm_80", "sm_90"), ("sm_90a",), 4)  # 3 files + the device link
