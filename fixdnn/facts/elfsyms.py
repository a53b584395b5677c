"""ELF symbol versioning, read the way glibc checks it when one object is bound to another.

Two questions, each answered from a handful of small, bounded reads (section headers, the version
sections, and single symbol-table entries found through the hash table), never the whole file:

* :func:`version_needs`: which versions (``DT_VERNEED``) and which undefined versioned symbols an object
  asks of one provider SONAME.
* :func:`version_defs` / :func:`defines`: which versions a provider defines (``DT_VERDEF``) and whether
  it defines one symbol at one version (a ``.gnu.hash`` / ``.hash`` lookup).

A file that cannot be read or has no section headers answers ``None`` (unknown), never an exception.
"""

from __future__ import annotations

import stat as stat_mod
import struct
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from fixdnn.target.host import Host, HostError

SHT_DYNSYM = 11
SHT_HASH = 5
SHT_RELA = 4
SHT_REL = 9
SHT_GNU_HASH = 0x6FFFFFF6
SHT_GNU_VERDEF = 0x6FFFFFFD
SHT_GNU_VERNEED = 0x6FFFFFFE
SHT_GNU_VERSYM = 0x6FFFFFFF
VER_FLG_WEAK = 0x2
STB_LOCAL = 0
STB_WEAK = 2
_MAX_SECTIONS = 1 << 16
_MAX_ENTRIES = 1 << 16  # verneed / verdef entries walked before giving up on a damaged chain
_CHUNK = 1 << 16
T = TypeVar("T")


class _Bad(Exception):
    pass


@dataclass(frozen=True)
class _Section:
    type: int
    offset: int
    size: int
    link: int
    info: int
    entsize: int


@dataclass(frozen=True)
class Needs:
    """What a requester asks of one provider (by the provider's SONAME)."""

    versions: tuple[tuple[str, bool], ...]  # (version name, weak)
    symbols: tuple[tuple[str, str], ...]  # (undefined non-weak symbol, version name)
    indexes: dict[tuple[str, str], int] = field(default_factory=dict)  # symbol -> its .dynsym index


class _Elf:
    def __init__(self, fh):
        self.fh = fh
        ident = self._read(0, 16)
        if ident[:4] != b"\x7fELF" or ident[4] not in (1, 2) or ident[5] not in (1, 2):
            raise _Bad("not an ELF file")
        self.is64 = ident[4] == 2
        self.end = "<" if ident[5] == 1 else ">"
        if self.is64:
            shoff, = struct.unpack(self.end + "Q", self._read(0x28, 8))
            shentsize, shnum, shstrndx = struct.unpack(self.end + "HHH", self._read(0x3A, 6))
            fmt, self.sym_size = self.end + "IIQQQQIIQQ", 24
        else:
            shoff, = struct.unpack(self.end + "I", self._read(0x20, 4))
            shentsize, shnum, shstrndx = struct.unpack(self.end + "HHH", self._read(0x2E, 6))
            fmt, self.sym_size = self.end + "IIIIIIIIII", 16
        if shoff == 0 or shnum == 0:
            raise _Bad("no section headers")
        if shnum > _MAX_SECTIONS or shentsize < struct.calcsize(fmt):
            raise _Bad("damaged section headers")
        raw = self._read(shoff, shentsize * shnum)
        self.sections = []
        for i in range(shnum):
            f = struct.unpack_from(fmt, raw, i * shentsize)
            # (name, type, flags, addr, offset, size, link, info, align, entsize)
            self.sections.append(_Section(f[1], f[4], f[5], f[6], f[7], f[9]))

    def _read(self, offset: int, size: int) -> bytes:
        self.fh.seek(offset)
        data = self.fh.read(size)
        if len(data) != size:
            raise _Bad("truncated")
        return data

    def first(self, kind: int) -> _Section | None:
        return next((s for s in self.sections if s.type == kind), None)

    def string(self, table: _Section, offset: int) -> str:
        if offset >= table.size:
            raise _Bad("string offset outside its table")
        out = b""
        at = table.offset + offset
        while True:
            self.fh.seek(at)
            piece = self.fh.read(256)
            if not piece:
                raise _Bad("truncated string")
            cut = piece.find(b"\0")
            if cut >= 0:
                return (out + piece[:cut]).decode("utf-8", "replace")
            out += piece
            at += len(piece)

    def symbol(self, dynsym: _Section, index: int) -> tuple[int, int, int]:
        """(st_name, st_info, st_shndx) of one dynamic symbol."""
        raw = self._read(dynsym.offset + index * self.sym_size, self.sym_size)
        if self.is64:
            name, info, _other, shndx = struct.unpack_from(self.end + "IBBH", raw)
        else:
            name, _value, _size, info, _other, shndx = struct.unpack_from(self.end + "IIIBBH", raw)
        return name, info, shndx

    def versym(self, versym: _Section, index: int) -> int:
        return struct.unpack(self.end + "H", self._read(versym.offset + 2 * index, 2))[0]

    def versym_array(self, versym: _Section) -> array:
        """All version indexes, read in chunks into a compact array (2 bytes a symbol)."""
        out = array("H")
        left, at = versym.size - versym.size % 2, versym.offset
        while left > 0:
            n = min(left, _CHUNK)
            out.frombytes(self._read(at, n))
            at, left = at + n, left - n
        if self.end == ">" and array("H", [1]).tobytes() == b"\x01\x00":
            out.byteswap()
        return out

    def relocation_order(self, wanted: set[int], dynsym_index: int) -> dict[int, int]:
        """For each wanted symbol index: the position of its first dynamic relocation, in the order ld.so
        processes them (DT_RELA / DT_REL first, the PLT relocations last: section order)."""
        if not wanted:
            return {}
        found: dict[int, int] = {}
        position = 0
        relocs = [s for s in self.sections if s.type in (SHT_RELA, SHT_REL) and s.link == dynsym_index]
        for sec in sorted(relocs, key=lambda s: s.offset):
            size = (24 if sec.type == SHT_RELA else 16) if self.is64 else (12 if sec.type == SHT_RELA else 8)
            info_at, info_fmt = (8, "Q") if self.is64 else (4, "I")
            left, at = sec.size - sec.size % size, sec.offset
            while left > 0:
                chunk = self._read(at, min(left, _CHUNK - _CHUNK % size))
                for start in range(0, len(chunk), size):
                    info, = struct.unpack_from(self.end + info_fmt, chunk, start + info_at)
                    sym = info >> 32 if self.is64 else info >> 8
                    if sym in wanted and sym not in found:
                        found[sym] = position
                    position += 1
                at, left = at + len(chunk), left - len(chunk)
        return found

    def _entries(self, section: _Section, head: str, head_size: int, next_at: int):
        """Walk a verneed / verdef chain: yields (offset, fields)."""
        at, seen = section.offset, 0
        end = section.offset + section.size
        while seen < _MAX_ENTRIES:
            if at + head_size > end:
                raise _Bad("version entry outside its section")
            fields = struct.unpack(self.end + head, self._read(at, head_size))
            yield at, fields
            seen += 1
            if fields[next_at] == 0:
                return
            at += fields[next_at]
        raise _Bad("version chain too long")

    def verneed(self) -> dict[int, tuple[str, str, bool]]:
        """version index -> (file, version name, weak)."""
        sec = self.first(SHT_GNU_VERNEED)
        if sec is None:
            return {}
        strtab = self.sections[sec.link]
        out = {}
        for at, (_ver, cnt, vn_file, vn_aux, _next) in self._entries(sec, "HHIII", 16, 4):
            filename = self.string(strtab, vn_file)
            aux = at + vn_aux
            for _ in range(min(cnt, _MAX_ENTRIES)):
                _hash, flags, other, name, nxt = struct.unpack(self.end + "IHHII", self._read(aux, 16))
                out[other & 0x7FFF] = (filename, self.string(strtab, name), bool(flags & VER_FLG_WEAK))
                if nxt == 0:
                    break
                aux += nxt
        return out

    def verdef(self) -> dict[int, str] | None:
        """version index -> name; None when the object has no symbol versioning at all."""
        sec = self.first(SHT_GNU_VERDEF)
        if sec is None:
            return None
        strtab = self.sections[sec.link]
        out = {}
        for at, (_ver, _flags, ndx, cnt, _hash, aux, _next) in self._entries(sec, "HHHHIII", 20, 6):
            if cnt:
                name, _n = struct.unpack(self.end + "II", self._read(at + aux, 8))
                out[ndx & 0x7FFF] = self.string(strtab, name)
        return out


def _open(host: Host, path: str):
    try:
        if not stat_mod.S_ISREG(host.stat(path).st_mode):
            return None  # a FIFO or a device would block or never end
        return host.open_binary(path)
    except HostError:
        return None


def _answer(host: Host, path: str, question: Callable[[_Elf], T]) -> T | None:
    """``question(elf)`` for the file at ``path``; None when it cannot be opened or read as ELF."""
    fh = _open(host, path)
    if fh is None:
        return None
    with fh:
        try:
            return question(_Elf(fh))
        except (_Bad, struct.error, IndexError, OSError):
            return None


def version_needs(host: Host, path: str, provider_soname: str) -> Needs | None:
    """The versions and the undefined, non-weak versioned symbols that ``path`` asks of ``provider_soname``."""

    def question(elf: _Elf) -> Needs:
        needs = {ndx: (name, weak) for ndx, (filename, name, weak) in elf.verneed().items()
                 if filename == provider_soname}
        if not needs:
            return Needs((), ())
        dynsym, versym = elf.first(SHT_DYNSYM), elf.first(SHT_GNU_VERSYM)
        symbols: dict[int, tuple[str, str]] = {}
        if dynsym is not None and versym is not None:
            strtab = elf.sections[dynsym.link]
            for index, ndx in enumerate(elf.versym_array(versym)):
                if (ndx & 0x7FFF) not in needs:
                    continue
                name, info, shndx = elf.symbol(dynsym, index)
                if shndx == 0 and info >> 4 != STB_WEAK:
                    symbols[index] = (elf.string(strtab, name), needs[ndx & 0x7FFF][0])
        indexes = {symbol: index for index, symbol in symbols.items()}
        return Needs(tuple(sorted(set(needs.values()))), tuple(sorted(set(symbols.values()))), indexes)

    return _answer(host, path, question)


def first_uses(host: Host, path: str, indexes: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """For each symbol (given with its .dynsym index): the position of its first dynamic relocation in
    ``path``, in the order ld.so binds them. Read only when a symbol is missing: the first one names the
    loader's error. Empty when it cannot be read."""

    def question(elf: _Elf) -> dict[tuple[str, str], int]:
        dynsym = elf.first(SHT_DYNSYM)
        order = elf.relocation_order(set(indexes.values()), elf.sections.index(dynsym) if dynsym else -1)
        return {symbol: order[i] for symbol, i in indexes.items() if i in order}

    return _answer(host, path, question) or {}


def version_defs(host: Host, path: str) -> tuple[str, ...] | None:
    """The version names ``path`` defines; ``()`` when it has no versioning (glibc then accepts any version)."""

    def question(elf: _Elf) -> tuple[str, ...]:
        defs = elf.verdef()
        return () if defs is None else tuple(defs.values())

    return _answer(host, path, question)


def _gnu_hash(name: bytes) -> int:
    h = 5381
    for c in name:
        h = (h * 33 + c) & 0xFFFFFFFF
    return h


def _sysv_hash(name: bytes) -> int:
    h = 0
    for c in name:
        h = ((h << 4) + c) & 0xFFFFFFFF
        g = h & 0xF0000000
        if g:
            h ^= g >> 24
        h &= ~g & 0xFFFFFFFF
    return h


def _candidates(elf: _Elf, name: bytes):
    """Symbol indexes that may hold ``name``, from .gnu.hash, else .hash."""
    gnu = elf.first(SHT_GNU_HASH)
    if gnu is not None:
        nbuckets, symoffset, bloom_size, _shift = struct.unpack(elf.end + "IIII", elf._read(gnu.offset, 16))
        if nbuckets == 0:
            return
        h = _gnu_hash(name)
        buckets_at = gnu.offset + 16 + bloom_size * (8 if elf.is64 else 4)
        index, = struct.unpack(elf.end + "I", elf._read(buckets_at + 4 * (h % nbuckets), 4))
        if index < symoffset:
            return
        chain_at = buckets_at + 4 * nbuckets
        for _ in range(_MAX_ENTRIES * 16):
            value, = struct.unpack(elf.end + "I", elf._read(chain_at + 4 * (index - symoffset), 4))
            if (value | 1) == (h | 1):
                yield index
            if value & 1:
                return
            index += 1
        return
    sysv = elf.first(SHT_HASH)
    if sysv is None:
        raise _Bad("no symbol hash table")
    nbucket, nchain = struct.unpack(elf.end + "II", elf._read(sysv.offset, 8))
    if nbucket == 0:
        return
    index, = struct.unpack(elf.end + "I", elf._read(sysv.offset + 8 + 4 * (_sysv_hash(name) % nbucket), 4))
    for _ in range(nchain):
        if index == 0:
            return
        yield index
        index, = struct.unpack(elf.end + "I", elf._read(sysv.offset + 8 + 4 * nbucket + 4 * index, 4))


def defines(host: Host, path: str, symbols: list[tuple[str, str]]) -> dict[tuple[str, str], bool] | None:
    """For each (symbol, version): whether ``path`` defines that symbol at that version."""

    def question(elf: _Elf) -> dict[tuple[str, str], bool]:
        dynsym, versym = elf.first(SHT_DYNSYM), elf.first(SHT_GNU_VERSYM)
        if dynsym is None:
            raise _Bad("no dynamic symbol table")
        strtab = elf.sections[dynsym.link]
        defs = elf.verdef()

        def found(name: str, version: str) -> bool:
            for index in _candidates(elf, name.encode()):
                st_name, info, shndx = elf.symbol(dynsym, index)
                if shndx == 0 or info >> 4 == STB_LOCAL or elf.string(strtab, st_name) != name:
                    continue
                if defs is None or versym is None:
                    return True  # an unversioned provider satisfies any versioned reference
                raw = elf.versym(versym, index)
                defined_as = defs.get(raw & 0x7FFF)
                # glibc's check_match: the same version name, or a definition without a version entry
                # that is not hidden.
                if defined_as == version or (defined_as is None and not raw & 0x8000):
                    return True
            return False

        return {(name, version): found(name, version) for name, version in symbols}

    return _answer(host, path, question)
