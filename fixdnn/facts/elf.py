"""ELF dynamic-section facts (SONAME, DT_NEEDED, DT_RPATH, DT_RUNPATH) read through a Host.

Files are streamed through ``host.open_binary``: only the headers, the PT_DYNAMIC segment and its string
table are read (with struct; pyelftools handles whatever that fast path does not), so a 500 MB
``libtorch_cuda.so`` costs well under a millisecond. A file that cannot be read or parsed is a
fact with ``error`` set, never an exception.
"""

from __future__ import annotations

import functools
import stat as stat_mod
from dataclasses import dataclass, replace

from fixdnn.target.host import Host, HostError

DF_1_NODEFLIB = 0x800  # <elf.h>: "Ignore default lib search path" (ld -z nodeflib)


@dataclass(frozen=True)
class ElfInfo:
    path: str  # as given by the caller (the loader's l_name), not resolved
    soname: str | None = None
    needed: tuple[str, ...] = ()
    rpath: tuple[str, ...] = ()  # DT_RPATH split on ':' (raw, $ORIGIN not expanded)
    runpath: tuple[str, ...] = ()
    elf_class: int = 0  # 32 or 64; 0 when unknown
    machine: str = ""  # e_machine as pyelftools names it, e.g. "EM_X86_64"
    error: str | None = None
    nodeflib: bool = False  # DF_1_NODEFLIB: the loader skips cache entries and default dirs

    @property
    def ok(self) -> bool:
        return self.error is None


def _split_path_list(value: str) -> tuple[str, ...]:
    # Empty elements are kept: the loader reads an empty element as "./" (the current directory).
    return tuple(value.split(":"))


def _dynamic_tags(elf):
    """The dynamic tags from the PT_DYNAMIC segment (what the loader reads, and a handful of program
    headers: much cheaper than building pyelftools' section-name map); the .dynamic section otherwise."""
    try:
        for segment in elf.iter_segments():
            if segment.header["p_type"] == "PT_DYNAMIC":
                return list(segment.iter_tags())
    except Exception:  # noqa: BLE001 - corrupt program headers: try the section headers
        pass
    section = None
    try:
        if elf.num_sections():
            section = elf.get_section_by_name(".dynamic")
    except Exception:  # noqa: BLE001
        section = None
    if section is not None and section.header["sh_type"] == "SHT_DYNAMIC":
        return list(section.iter_tags())
    return None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__


# e_machine values the fast reader names itself (pyelftools' names); anything else goes to pyelftools.
_MACHINES = {62: "EM_X86_64", 3: "EM_386", 183: "EM_AARCH64", 40: "EM_ARM", 21: "EM_PPC64", 243: "EM_RISCV",
             22: "EM_S390"}
_PT_LOAD, _PT_DYNAMIC = 1, 2
_DT_NEEDED, _DT_STRTAB, _DT_STRSZ, _DT_SONAME, _DT_RPATH, _DT_RUNPATH, _DT_FLAGS_1 = 1, 5, 10, 14, 15, 29, 0x6FFFFFFB
_MAX_DYNAMIC = 1 << 16  # entries; real libraries have a few dozen
_MAX_STRTAB = 16 << 20


class _NotSimple(Exception):
    """The fast reader does not handle this file; pyelftools decides (and words the error)."""


def _fast(fh) -> ElfInfo:
    """Read the dynamic tags with struct: ELF header, program headers, PT_DYNAMIC and its string table.

    pyelftools builds objects for every program header and scans the section headers for the string
    table; on the real CUDA libraries that was most of a diagnosis. The loader itself only reads what
    this reads. Anything unexpected raises _NotSimple.
    """
    import struct

    ident = fh.read(64)
    if len(ident) < 52 or ident[4] not in (1, 2) or ident[5] not in (1, 2):
        raise _NotSimple
    is64, end = ident[4] == 2, "<" if ident[5] == 1 else ">"
    machine = _MACHINES.get(struct.unpack_from(end + "H", ident, 18)[0])
    if machine is None:
        raise _NotSimple
    if is64:
        phoff, = struct.unpack_from(end + "Q", ident, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", ident, 54)
        ph_fmt, dyn_fmt = end + "IIQQQQQQ", end + "qQ"
    else:
        phoff, = struct.unpack_from(end + "I", ident, 28)
        phentsize, phnum = struct.unpack_from(end + "HH", ident, 42)
        ph_fmt, dyn_fmt = end + "IIIIIIII", end + "iI"
    if phnum == 0xFFFF or phentsize < struct.calcsize(ph_fmt) or phnum > 4096:
        raise _NotSimple
    fh.seek(phoff)
    table = fh.read(phentsize * phnum)
    if len(table) < phentsize * phnum:
        raise _NotSimple
    loads, dynamic = [], None
    for i in range(phnum):
        f = struct.unpack_from(ph_fmt, table, i * phentsize)
        # 64: type, flags, offset, vaddr, paddr, filesz; 32: type, offset, vaddr, paddr, filesz
        ptype, offset, vaddr, filesz = (f[0], f[2], f[3], f[5]) if is64 else (f[0], f[1], f[2], f[4])
        if ptype == _PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif ptype == _PT_DYNAMIC:
            dynamic = (offset, filesz)
    if dynamic is None:
        return ElfInfo(path="", elf_class=64 if is64 else 32, machine=machine,
                       error="no dynamic section (static object)")
    entsize = struct.calcsize(dyn_fmt)
    fh.seek(dynamic[0])
    raw = fh.read(min(dynamic[1], _MAX_DYNAMIC * entsize))
    if len(raw) < min(dynamic[1], _MAX_DYNAMIC * entsize):
        raise _NotSimple
    tags: list[tuple[int, int]] = []
    for tag, value in struct.iter_unpack(dyn_fmt, raw[: len(raw) - len(raw) % entsize]):
        if tag == 0:
            break
        tags.append((tag, value))
    strtab = next((v for t, v in tags if t == _DT_STRTAB), None)
    strsz = next((v for t, v in tags if t == _DT_STRSZ), None)
    if strtab is None or strsz is None or strsz > _MAX_STRTAB:
        raise _NotSimple
    file_off = next((off + strtab - va for va, off, size in loads if va <= strtab < va + size), None)
    if file_off is None:
        raise _NotSimple
    fh.seek(file_off)
    strings = fh.read(strsz)
    if len(strings) < strsz:
        raise _NotSimple

    def text(at: int) -> str:
        if at >= len(strings):
            raise _NotSimple
        stop = strings.find(b"\0", at)
        return strings[at: stop if stop >= 0 else len(strings)].decode("utf-8", "surrogateescape")

    soname, needed, rpath, runpath, flags_1 = None, [], (), (), 0
    for tag, value in tags:
        if tag == _DT_NEEDED:
            needed.append(text(value))
        elif tag == _DT_SONAME:
            soname = text(value)
        elif tag == _DT_RPATH:
            rpath = _split_path_list(text(value))
        elif tag == _DT_RUNPATH:
            runpath = _split_path_list(text(value))
        elif tag == _DT_FLAGS_1:
            flags_1 = value
    return ElfInfo(path="", soname=soname, needed=tuple(needed), rpath=rpath, runpath=runpath,
                   elf_class=64 if is64 else 32, machine=machine, nodeflib=bool(flags_1 & DF_1_NODEFLIB))


def _parse(fh) -> ElfInfo:
    head = fh.read(4)
    if head != b"\x7fELF":
        return ElfInfo(path="", error="not an ELF file" if head else "empty file")
    fh.seek(0)
    try:
        return _fast(fh)
    except (_NotSimple, OSError, ValueError, OverflowError, __import__("struct").error):
        fh.seek(0)
    from elftools.elf.elffile import ELFFile  # imported lazily: keeps CLI start-up cheap

    try:
        elf = ELFFile(fh)
        elf_class = elf.elfclass
        machine = elf["e_machine"]
        tags = _dynamic_tags(elf)
        if tags is None:
            return ElfInfo(path="", elf_class=elf_class, machine=machine, error="no dynamic section (static object)")
        soname, needed, rpath, runpath, flags_1 = None, [], (), (), 0
        for tag in tags:
            kind = tag.entry.d_tag
            if kind == "DT_NEEDED":
                needed.append(tag.needed)
            elif kind == "DT_SONAME":
                soname = tag.soname
            elif kind == "DT_RPATH":
                rpath = _split_path_list(tag.rpath)
            elif kind == "DT_RUNPATH":
                runpath = _split_path_list(tag.runpath)
            elif kind == "DT_FLAGS_1":
                flags_1 = tag.entry.d_val
        return ElfInfo(
            path="",
            soname=soname,
            needed=tuple(needed),
            rpath=rpath,
            runpath=runpath,
            elf_class=elf_class,
            machine=machine,
            nodeflib=bool(flags_1 & DF_1_NODEFLIB),
        )
    except Exception as exc:  # noqa: BLE001 - pyelftools raises many types on truncated/garbage input
        return ElfInfo(path="", error=f"malformed ELF ({_one_line(exc)})")


@functools.lru_cache(maxsize=2048)
def _parse_cached(on_disk: str, size: int, mtime_ns: int, ino: int) -> ElfInfo:
    try:
        with open(on_disk, "rb") as fh:
            return _parse(fh)
    except OSError as exc:
        return ElfInfo(path="", error=exc.strerror or exc.__class__.__name__)


def read_elf(host: Host, path: str) -> ElfInfo:
    """Dynamic-section facts of ``path`` (a target path). Never raises."""
    try:
        st = host.stat(path)
    except HostError as exc:
        try:
            host.lstat(path)
            reason = f"broken symlink ({exc.reason})"
        except HostError:
            reason = exc.reason
        return ElfInfo(path=path, error=reason)
    if stat_mod.S_ISDIR(st.st_mode):
        return ElfInfo(path=path, error="is a directory")
    if not stat_mod.S_ISREG(st.st_mode):
        return ElfInfo(path=path, error="not a regular file")
    # Open through the host first so permission errors are reported even when the parse is cached.
    try:
        host.open_binary(path).close()
    except HostError as exc:
        return ElfInfo(path=path, error=exc.reason)
    on_disk = host.on_disk(path)
    info = _parse_cached(on_disk, st.st_size, st.st_mtime_ns, st.st_ino)
    return replace(info, path=path)


def exports_symbol(host: Host, path: str, name: str) -> bool | None:
    """Whether ``path`` defines the dynamic symbol ``name``; None when that cannot be told.

    Uses the .gnu.hash lookup (one bucket walk) instead of building a name map of every dynamic
    symbol, which costs half a second on libtorch_cuda.so. Falls back to SysV .hash.
    """
    try:
        fh = host.open_binary(path)
    except HostError:
        return None
    with fh:
        try:
            from elftools.elf.elffile import ELFFile

            if fh.read(4) != b"\x7fELF":
                return None
            fh.seek(0)
            elf = ELFFile(fh)
            table = elf.get_section_by_name(".gnu.hash") or elf.get_section_by_name(".hash")
            if table is None:
                return None
            sym = table.get_symbol(name)
            return sym is not None and sym["st_shndx"] != "SHN_UNDEF"
        except Exception:  # noqa: BLE001 - a damaged file: unknown, not an error
            return None
