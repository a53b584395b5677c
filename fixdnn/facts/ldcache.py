"""Parse ``/etc/ld.so.cache`` through a Host (so ``--root`` diagnoses an image's own cache).

Layouts (glibc ``sysdeps/generic/dl-cache.h``):

* new:  ``"glibc-ld.so.cache1.1"`` header (48 bytes), then 24-byte entries
  ``{int32 flags; uint32 key, value; uint32 osversion; uint64 hwcap}``; string offsets are relative to the
  start of this header.
* old:  ``"ld.so-1.7.0"`` (12 bytes with padding), ``uint32 nlibs``, 12-byte entries ``{int32 flags; uint32
  key, value}``; string offsets are relative to the end of the entry array.
* compat: an old cache followed, at the next 8-byte boundary, by a complete new cache. glibc uses the new
  part when it is there, and so do we.

Entries come back in file order. ldconfig sorts them so that the loader's binary search and ``ldconfig -p``
both see the preferred entry first; we keep that order rather than re-deriving it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

from fixdnn.target.host import Host, HostError

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
_OLD_HEADER = 16
_OLD_ENTRY = 12
_NEW_HEADER = 48
_NEW_ENTRY = 24

# dl-cache.h flag values
FLAG_TYPE_MASK = 0x00FF
FLAG_ELF = 0x0001
FLAG_ELF_LIBC6 = 0x0003
FLAG_REQUIRED_MASK = 0xFF00
_ARCH_FLAGS = {
    ("EM_X86_64", 64): 0x0300,  # FLAG_X8664_LIB64
    ("EM_X86_64", 32): 0x0800,  # FLAG_X8664_LIBX32
    ("EM_AARCH64", 64): 0x0A00,  # FLAG_AARCH64_LIB64
    ("EM_PPC64", 64): 0x0500,  # FLAG_POWERPC_LIB64
    ("EM_S390", 64): 0x0400,  # FLAG_S390_LIB64
    ("EM_386", 32): 0x0000,
}
_ARCH_NAMES = {0x0300: "x86-64", 0x0800: "x32", 0x0A00: "AArch64", 0x0500: "64bit", 0x0400: "64bit"}
# Entries for libraries in glibc-hwcaps/<level>/ subdirectories carry this bit in ``hwcap``.
DL_CACHE_HWCAP_EXTENSION = 1 << 62

_MAX_SIZE = 64 << 20


class CacheEntry(NamedTuple):
    soname: str
    path: str
    flags: int


@dataclass(frozen=True)
class LdCache:
    path: str
    entries: tuple[CacheEntry, ...] = ()
    format: str = ""  # "new", "old", "compat"; "" when unreadable
    error: str | None = None
    # Entries for glibc-hwcaps subdirectories, left out of ``entries``: the loader only uses them on CPUs
    # that support the level, and fixdnn does not model hwcaps subdirectories yet.
    hwcaps_entries: tuple[CacheEntry, ...] = ()


def flags_match(flags: int, elf_class: int = 64, machine: str = "EM_X86_64") -> bool:
    """glibc's ``_dl_cache_check_flags``: FLAG_ELF, or exactly libc6 + this ABI's required bits."""
    if flags == FLAG_ELF:
        return True
    required = _ARCH_FLAGS.get((machine, elf_class))
    if required is None:
        return (flags & FLAG_TYPE_MASK) == FLAG_ELF_LIBC6
    return flags == (FLAG_ELF_LIBC6 | required)


def describe_flags(flags: int) -> str:
    """The ``(libc6,x86-64)`` label ``ldconfig -p`` prints."""
    kind = {0: "libc4", 1: "ELF", 2: "libc5", 3: "libc6"}.get(flags & FLAG_TYPE_MASK, "unknown")
    arch = _ARCH_NAMES.get(flags & FLAG_REQUIRED_MASK)
    return f"{kind},{arch}" if arch else kind


def _cstr(data: bytes, offset: int) -> str:
    if offset < 0 or offset >= len(data):
        raise ValueError(f"string offset {offset} outside the file")
    end = data.find(b"\0", offset)
    if end < 0:
        raise ValueError(f"unterminated string at offset {offset}")
    return data[offset:end].decode("utf-8", errors="surrogateescape")


def _parse_new(data: bytes, base: int) -> tuple[list[CacheEntry], list[CacheEntry]]:
    if len(data) < base + _NEW_HEADER:
        raise ValueError("truncated header")
    nlibs, _len_strings = struct.unpack_from("<II", data, base + 20)
    if base + _NEW_HEADER + nlibs * _NEW_ENTRY > len(data):
        raise ValueError(f"{nlibs} entries do not fit in {len(data)} bytes")
    entries, hwcaps = [], []
    for i in range(nlibs):
        flags, key, value, _osv, hwcap = struct.unpack_from("<iIIIQ", data, base + _NEW_HEADER + i * _NEW_ENTRY)
        entry = CacheEntry(_cstr(data, base + key), _cstr(data, base + value), flags)
        (hwcaps if hwcap & DL_CACHE_HWCAP_EXTENSION else entries).append(entry)
    return entries, hwcaps


def _parse_old(data: bytes) -> list[CacheEntry]:
    (nlibs,) = struct.unpack_from("<I", data, 12)
    strings = _OLD_HEADER + nlibs * _OLD_ENTRY
    if strings > len(data):
        raise ValueError(f"{nlibs} entries do not fit in {len(data)} bytes")
    out = []
    for i in range(nlibs):
        flags, key, value = struct.unpack_from("<iII", data, _OLD_HEADER + i * _OLD_ENTRY)
        out.append(CacheEntry(_cstr(data, strings + key), _cstr(data, strings + value), flags))
    return out


def parse_ld_cache(data: bytes, path: str = "/etc/ld.so.cache") -> LdCache:
    try:
        if data.startswith(NEW_MAGIC):
            entries, hwcaps = _parse_new(data, 0)
            return LdCache(path, tuple(entries), "new", hwcaps_entries=tuple(hwcaps))
        if data.startswith(OLD_MAGIC) and len(data) >= _OLD_HEADER:
            (nlibs,) = struct.unpack_from("<I", data, 12)
            new_at = (_OLD_HEADER + nlibs * _OLD_ENTRY + 7) & ~7  # ALIGN_CACHE
            if data[new_at : new_at + len(NEW_MAGIC)] == NEW_MAGIC:
                entries, hwcaps = _parse_new(data, new_at)
                return LdCache(path, tuple(entries), "compat", hwcaps_entries=tuple(hwcaps))
            return LdCache(path, tuple(_parse_old(data)), "old")
        if not data:
            return LdCache(path, error="empty file")
        return LdCache(path, error="not a loader cache (unknown magic)")
    except (ValueError, struct.error) as exc:
        return LdCache(path, error=f"malformed loader cache: {exc}")


def read_ld_cache(host: Host, path: str = "/etc/ld.so.cache") -> LdCache:
    """The cache the target's loader would read. A missing or broken cache is a result, not an error."""
    try:
        data = host.read_bytes(path, limit=_MAX_SIZE)
    except HostError as exc:
        return LdCache(path, error=exc.reason)
    return parse_ld_cache(data, path)
