"""CUDA fat binaries: which GPU architectures a shared library carries kernels for.

nvcc embeds device code in the ``.nv_fatbin`` section of the host ELF file: a sequence of fat binary
containers (magic ``0xBA55ED50``), each a list of entries, each entry either machine code for one
architecture (an ELF "cubin": SASS ``sm_XX``) or PTX for the driver to JIT-compile (``compute_XX``). Every
entry header states its kind, architecture and (for PTX) the PTX ISA version, also when the payload is
compressed, so the reader reads headers only: a few dozen bytes per entry with ``os.pread``, skipping the
payloads. A 1 GB ``libtorch_cuda.so`` is never read into memory.

Layout (little-endian; it matches what nvcc 13.0 writes, checked by the tests with real nvcc output):

* container header, 16 bytes: magic u32, version u16, header size u16, size of the entries u64;
* entry header, >= 64 bytes: kind u16 (1 PTX, 2 ELF), version u16, header size u32, payload size u64,
  compressed size u32, u32, minor u16, major u16 (the PTX ISA version for PTX), arch u32 (90 = 9.0),
  name offset u32, name length u32, flags u64 (0x100000: an ``a`` arch-specific target such as sm_90a,
  0x200000: an ``f`` family target such as sm_100f; 0x2000 / 0x8000: compressed payload), ...

Results are cached by file identity (path, size, mtime, inode, ctime), in the process and on disk.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from pathlib import Path

from fixdnn.base.filecache import FileCache
from fixdnn.model.facts import KernelImages, arch_number
from fixdnn.target.host import Host, HostError, file_identity

MAGIC = 0xBA55ED50
_MAGIC_BYTES = struct.pack("<I", MAGIC)
SECTION = ".nv_fatbin"
KIND_PTX, KIND_ELF = 1, 2
FLAG_ARCH_SPECIFIC, FLAG_FAMILY = 0x100000, 0x200000
_CONTAINER = struct.Struct("<IHHQ")
_ENTRY = struct.Struct("<HHIQIIHHI")  # kind, version, header size, size, compressed size, -, minor, major, arch
_FLAGS_AT = 40
_ENTRY_MIN = 48
_MAX_SECTIONS = 1 << 16
_MAX_SHSTRTAB = 16 << 20
_SCAN_CHUNK = 64 << 10  # padding between containers is searched in bounded chunks

CACHE_NAME = "fatbin-cache.json"
CACHE_SCHEMA = "fixdnn.fatbin-cache/2"


class _Bad(Exception):
    """The file is not what the reader expects; the message is the fact's error."""


def _pread(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) < size:
        raise _Bad(f"truncated at byte {offset + len(data)}")
    return data


def fatbin_sections(fd: int) -> list[tuple[int, int]]:
    """(file offset, size) of every ``.nv_fatbin`` section of a 64-bit little-endian ELF file."""
    ident = os.pread(fd, 64, 0)
    if ident[:4] != b"\x7fELF":
        raise _Bad("not an ELF file" if ident else "empty file")
    if len(ident) < 64:
        raise _Bad("truncated ELF header")
    if ident[4] != 2 or ident[5] != 1:
        raise _Bad("not a 64-bit little-endian ELF file (CUDA device code needs one)")
    shoff, = struct.unpack_from("<Q", ident, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ident, 0x3A)
    if shoff == 0:
        return []  # no section headers (stripped to the bone): nothing to find
    if shentsize < 64:
        raise _Bad(f"section header size {shentsize} is too small")
    first = _pread(fd, 64, shoff)
    if shnum == 0:  # more than 0xff00 sections: the real count is in section 0's sh_size
        shnum = struct.unpack_from("<Q", first, 0x20)[0]
    if shstrndx == 0xFFFF:  # SHN_XINDEX
        shstrndx = struct.unpack_from("<I", first, 0x28)[0]
    if shnum > _MAX_SECTIONS or shstrndx >= shnum:
        raise _Bad(f"implausible section table ({shnum} sections, names in {shstrndx})")
    table = _pread(fd, shentsize * shnum, shoff)
    headers = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]
    _, _, _, _, str_off, str_size = headers[shstrndx]
    if str_size > _MAX_SHSTRTAB:
        raise _Bad(f"section name table of {str_size} bytes")
    names = _pread(fd, str_size, str_off)
    want = SECTION.encode() + b"\0"
    out = []
    for name, sh_type, _, _, offset, size in headers:
        if sh_type != 8 and names[name:name + len(want)] == want:  # 8: SHT_NOBITS has no bytes in the file
            out.append((offset, size))
    return out


def _isa(major: int, minor: int) -> str:
    return f"{major}.{minor}"


def read_section(fd: int, offset: int, size: int) -> tuple[Counter, str | None, int, int]:
    """(containers holding each arch, newest PTX ISA, entries, containers) of one ``.nv_fatbin`` section,
    from the headers only. Archs are "sm_90" for machine code and "compute_90" for PTX."""
    seen: Counter = Counter()
    isa: tuple[int, int] | None = None
    entries = containers = 0
    pos, end = offset, offset + size
    while pos + _CONTAINER.size <= end:
        magic, _, head, fat_size = _CONTAINER.unpack(_pread(fd, _CONTAINER.size, pos))
        if magic != MAGIC:
            pos = _next_container(fd, pos, end)
            continue
        stop = pos + head + fat_size
        if head < _CONTAINER.size or stop > end:
            raise _Bad(f"fat binary at byte {pos} runs past its section")
        at = pos + head
        here: set[str] = set()
        while at + _ENTRY_MIN <= stop:
            raw = _pread(fd, _ENTRY_MIN, at)
            kind, _, entry_head, payload, _, _, minor, major, arch = _ENTRY.unpack_from(raw)
            flags, = struct.unpack_from("<Q", raw, _FLAGS_AT)
            if entry_head < _ENTRY_MIN or at + entry_head + payload > stop:
                raise _Bad(f"fat binary entry at byte {at} runs past its container")
            suffix = "a" if flags & FLAG_ARCH_SPECIFIC else "f" if flags & FLAG_FAMILY else ""
            if kind == KIND_ELF:
                here.add(f"sm_{arch}{suffix}")
            elif kind == KIND_PTX:
                here.add(f"compute_{arch}{suffix}")
                isa = max(isa, (major, minor)) if isa else (major, minor)
            entries += 1
            at += entry_head + payload
        seen.update(here)
        containers += 1
        pos = stop
    return seen, _isa(*isa) if isa else None, entries, containers


def _next_container(fd: int, pos: int, end: int) -> int:
    """The next 8-aligned magic after ``pos`` (linkers may pad between containers), or ``end``."""
    start = pos + 8
    while start < end:
        chunk = os.pread(fd, min(_SCAN_CHUNK, end - start), start)
        if not chunk:
            return end
        at = chunk.find(_MAGIC_BYTES)
        while at >= 0 and (start + at - pos) % 8:
            at = chunk.find(_MAGIC_BYTES, at + 1)
        if at >= 0:
            return start + at
        start += max(8, len(chunk) - len(chunk) % 8 - 8)
    return end


def _sorted(archs: set[str]) -> tuple[str, ...]:
    return tuple(sorted(archs, key=lambda a: (arch_number(a), a)))


def read(host: Host, path: str) -> KernelImages:
    """The kernels of one library; a file that cannot be read is a fact with ``error`` set.

    One container is one compiled source file. The build's architecture list is what at least half of them
    carry; the rest (``partial``) comes from a few files compiled for more (torch's sm_90a / sm_100a
    attention kernels), which does not make the build run on those GPUs."""
    try:
        fh = host.open_binary(path)
    except HostError as exc:
        return KernelImages(path, error=exc.reason)
    seen: Counter = Counter()
    isas: list[str] = []
    entries = containers = 0
    with fh:
        fd = fh.fileno()
        try:
            for offset, size in fatbin_sections(fd):
                s, i, n, c = read_section(fd, offset, size)
                seen += s
                entries += n
                containers += c
                if i:
                    isas.append(i)
        except _Bad as exc:
            return KernelImages(path, error=str(exc))
        except (OSError, struct.error) as exc:
            return KernelImages(path, error=getattr(exc, "strerror", None) or str(exc))
    isa = max(isas, key=lambda v: tuple(int(x) for x in v.split("."))) if isas else None
    main = {a for a, n in seen.items() if 2 * n >= containers}
    return KernelImages(path, _sorted({a for a in main if a.startswith("sm_")}),
                        _sorted({a for a in main if a.startswith("compute_")}), isa, entries,
                        partial=_sorted(set(seen) - main), containers=containers)


# -- the cache -----------------------------------------------------------------------------------------
class Cache(FileCache):
    """Kernel images by file identity (:mod:`fixdnn.base.filecache`), in fixdnn's state folder or nowhere."""

    def __init__(self, path: Path | None):
        super().__init__(path, CACHE_SCHEMA)

    def images(self, host: Host, path: str) -> KernelImages:
        return self.remember(f"{host.root or ''}\0{path}", lambda: file_identity(host, path),
                             lambda: read(host, path), KernelImages)
