"""A model of how the glibc dynamic loader (ld.so, glibc 2.3x) finds a shared object, with the evidence.

For a name without '/', ``_dl_map_object`` (elf/dl-load.c) searches, stopping at the first usable file:

0. (once, at start) every LD_PRELOAD entry is mapped first, searched as if the main program asked
   for it: it is then "already loaded" for every later request of its name or SONAME;
1. objects already loaded, matched by the requested name or their DT_SONAME (and, once a file is found
   on disk, by device/inode: the same file under another name is not mapped twice);
2. DT_RPATH of the requesting object, then of the object that loaded it, and on up to the root — only
   when the *requesting* object has no DT_RUNPATH. Any object that has DT_RUNPATH has its DT_RPATH
   dropped at load (``elf_get_dynamic_info``), so such an ancestor contributes nothing but the walk goes
   on past it. Then DT_RPATH of the main program if the walk did not reach it;
3. LD_LIBRARY_PATH (split on ':' and ';'; an empty element means the current directory);
4. DT_RUNPATH of the requesting object only (never inherited);
5. /etc/ld.so.cache (one entry: the first with a matching name and ABI flags);
6. the default directories compiled into ld.so.
Steps 5 and 6 are skipped for directories in the default list when the requester is linked -z nodeflib.

For ``dlopen()`` the requesting object is the one containing the caller (TensorFlow's dlopen of
``libcudnn.so.9`` from ``libtensorflow_framework.so.2`` uses *that* library's RUNPATH), so the same
function models both DT_NEEDED and dlopen.

Per candidate file (``open_verify``): a missing file (ENOENT, EACCES, a broken link, a search element that
is not a directory) means "keep looking"; a 32/64-bit or machine mismatch is skipped silently; any other
defect (too short, not ELF, a directory, wrong byte order...) is **fatal**: the load fails with that error
even if a good copy sits later in the path. A symlink loop (ELOOP) abandons the rest of that list.

``$ORIGIN`` is the directory of the object's path *as the loader recorded it* (the search directory
string + name, with '..' and symlinks left in), not its realpath; for the main program it is the realpath
from /proc/self/exe. The kernel resolves the '..' after following symlinks, which we reproduce by
resolving through the Host instead of normalising strings.
"""

from __future__ import annotations

import errno
import os
import re
import struct
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from fixdnn.facts.elf import ElfInfo, read_elf
from fixdnn.facts.ldcache import flags_match, read_ld_cache
from fixdnn.model.facts import LoaderStep, Resolution
from fixdnn.target.host import Host, HostError

SOURCES = (
    "already-loaded",
    "DT_RPATH",
    "LD_LIBRARY_PATH",
    "DT_RUNPATH",
    "ld.so.cache",
    "default-dirs",
    "direct-path",
)
# found: this file is used. absent: not there, keep looking. skipped: present but not usable by this
# process (wrong class/machine) or a list the loader ignores. unsafe: a search element meaning the current
# directory. invalid: a broken file that makes the whole load fail. stopped: the loader abandoned the rest
# of this list (ELOOP and similar).
OUTCOMES = ("found", "absent", "skipped", "unsafe", "invalid", "stopped")

# What glibc 2.36 on Debian/Ubuntu x86_64 searches (SYSTEM_DIRS, seen with LD_DEBUG=libs); Fedora/RHEL
# and most other distributions use /lib64:/usr/lib64.
MULTIARCH_DEFAULT_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib")
LIB64_DEFAULT_DIRS = ("/lib64", "/usr/lib64")

_EM = {"EM_X86_64": 62, "EM_386": 3, "EM_AARCH64": 183, "EM_PPC64": 21, "EM_S390": 22}
_EM_NAMES = {v: k for k, v in _EM.items()}


@dataclass(frozen=True)
class LoaderEnv:
    ld_library_path: tuple[str, ...] = ()  # raw elements, empty strings kept
    cwd: str = "/"
    ld_cache: tuple = ()  # CacheEntry tuples (soname, path, flags) in file order
    default_dirs: tuple[str, ...] = MULTIARCH_DEFAULT_DIRS
    preloaded: Mapping[str, str] = field(default_factory=dict)  # soname -> path already in the process
    preload_labels: Mapping[str, str] = field(default_factory=dict)  # path -> "LD_PRELOAD[i]" that put it there
    executable: ElfInfo | None = None  # the main program: its DT_RPATH is searched last in step 2
    lib: str = "lib/x86_64-linux-gnu"  # $LIB (Debian multiarch; "lib64" on Fedora/RHEL)
    platform: str = "x86_64"  # $PLATFORM: ld.so's dl_platform (may be "haswell", not the kernel's AT_PLATFORM)
    hwcaps_subdirs: tuple[str, ...] = ()  # e.g. ("glibc-hwcaps/x86-64-v3", ...) tried before each dir

    @staticmethod
    def split_ld_preload(value: str | None) -> tuple[str, ...]:
        """ld.so splits LD_PRELOAD on spaces *and* colons and skips empty elements (rtld.c)."""
        return tuple(p for p in re.split("[ :]", value or "") if p)

    @staticmethod
    def split_ld_library_path(value: str | None) -> tuple[str, ...]:
        """glibc splits LD_LIBRARY_PATH on ':' *and* ';'. Unset and empty are both "no list"."""
        if not value:
            return ()
        return tuple(re.split("[:;]", value))


def default_dirs_for(host: Host) -> tuple[str, ...]:
    """Debian-style multiarch layout if the target's libc lives there, else /lib64:/usr/lib64."""
    for d in MULTIARCH_DEFAULT_DIRS[:2]:
        if host.exists(d + "/libc.so.6"):
            return MULTIARCH_DEFAULT_DIRS
    return LIB64_DEFAULT_DIRS


_LD_SO = ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1", "/lib64/ld64.so.2")


def ld_so_diagnostics(host: Host) -> dict[str, str]:
    """``ld.so --list-diagnostics`` (glibc >= 2.33) as a dict; {} when it cannot run (under --root, or when
    the machine is a planted one: ``Host.system``).

    This is the loader's own word on $PLATFORM (dl_platform: "haswell" on this kind of CPU even though
    the kernel's AT_PLATFORM says "x86_64"), $LIB (dl_dst_lib), the default directories and the
    glibc-hwcaps levels it searches.
    """
    if host.root is not None or host.system is not None:  # not the machine's loader that would run
        return {}
    for ld_so in _LD_SO:
        if not host.exists(ld_so):
            continue
        res = host.run([ld_so, "--list-diagnostics"], timeout=10, env={})
        if res.returncode != 0:
            continue
        out: dict[str, str] = {}
        for line in res.stdout.splitlines():
            key, sep, value = line.partition("=")
            if sep:
                out[key] = value[1:-1] if value.startswith('"') and value.endswith('"') else value
        return out
    return {}


def _legacy_hwcaps(host: Host, ld_so_help: str) -> tuple[str, ...]:
    """glibc < 2.37 also searches legacy subdirectories (tls, $PLATFORM, hwcap names) of every directory.

    ``ld.so --help`` lists them; glibc tries every subset (platform first), with "tls/" before without.
    """
    names: list[str] = []
    in_legacy = False
    for line in ld_so_help.splitlines():
        if line.startswith("Legacy HWCAP subdirectories"):
            in_legacy = True
            continue
        if in_legacy:
            if not line.startswith("  "):
                break
            name, _, state = line.strip().partition(" ")
            if "searched" in state and name != "tls":
                names.append(name)
    if not in_legacy:
        return ()
    subsets = []
    for mask in range((1 << len(names)) - 1, 0, -1):
        subsets.append("/".join(n for i, n in enumerate(names) if mask & (1 << (len(names) - 1 - i))))
    return tuple(["tls/" + s for s in subsets] + ["tls"] + subsets)


def loader_env_from_host(host: Host, *, cwd: str | None = None, executable: str | None = None) -> LoaderEnv:
    """A LoaderEnv for the target: its LD_LIBRARY_PATH, its cache, its loader's own settings."""
    diag = ld_so_diagnostics(host)
    numbered = [(int(k[len("path.system_dirs["):-1], 0), v) for k, v in diag.items() if k.startswith("path.system_dirs[")]
    system = tuple(v.rstrip("/") or "/" for _, v in sorted(numbered)) or default_dirs_for(host)
    hwcaps: tuple[str, ...] = ()
    if diag:
        levels = [d for d in diag.get("dl_hwcaps_subdirs", "").split(":") if d]
        active = int(diag.get("dl_hwcaps_subdirs_active", "0"), 0)
        hwcaps = tuple(f"glibc-hwcaps/{d}" for i, d in enumerate(levels) if active & (1 << i))
        ld_so = diag.get("path.rtld", _LD_SO[0])
        hwcaps += _legacy_hwcaps(host, host.run([ld_so, "--help"], timeout=10, env={}).stdout)
    env = LoaderEnv(
        ld_library_path=LoaderEnv.split_ld_library_path(host.env("LD_LIBRARY_PATH")),
        cwd=cwd or (os.getcwd() if host.root is None else "/"),
        ld_cache=read_ld_cache(host).entries,
        default_dirs=system,
        executable=read_elf(host, executable) if executable else None,
        lib=diag.get("dl_dst_lib") or ("lib/x86_64-linux-gnu" if system == MULTIARCH_DEFAULT_DIRS else "lib64"),
        platform=diag.get("dl_platform") or "x86_64",
        hwcaps_subdirs=hwcaps,
    )
    return with_ld_preload(host, env, LoaderEnv.split_ld_preload(host.env("LD_PRELOAD")))


def with_ld_preload(host: Host, env: LoaderEnv, entries: Sequence[str]) -> LoaderEnv:
    """The process after ld.so mapped LD_PRELOAD: each entry is loaded before the program's own
    dependencies, as if the main program asked for it (a name without '/' is searched like a DT_NEEDED of
    the program), and its SONAME then answers every later DT_NEEDED and dlopen() of that name. An entry
    that cannot be loaded is ignored (ld.so prints "cannot be preloaded ... ignored")."""
    loaded = dict(env.preloaded)
    labels = dict(env.preload_labels)
    for index, entry in enumerate(entries):
        res = resolve(host, entry, [], replace(env, preloaded=loaded))
        if res.path is None:
            continue
        labels.setdefault(res.path, f"LD_PRELOAD[{index}]")
        loaded.setdefault(entry, res.path)
        soname = read_elf(host, res.path).soname
        if soname:
            loaded.setdefault(soname, res.path)
    for path, label in list(labels.items()):  # then their own DT_NEEDED, before any dlopen() of the program
        if label.startswith("LD_PRELOAD"):
            for name, dep in resolve_tree(host, path, replace(env, preloaded=loaded)).items():
                if dep.path is not None:
                    loaded.setdefault(name, dep.path)
    return replace(env, preloaded=loaded, preload_labels=labels)


# -- $ORIGIN and friends -----------------------------------------------------------------------------

_DST = re.compile(r"\$(?:\{(ORIGIN|LIB|PLATFORM)\}|(ORIGIN|LIB|PLATFORM)(?![A-Za-z0-9_]))")


def origin_of(obj: ElfInfo, env: LoaderEnv, host: Host | None = None) -> str:
    """The loader's l_origin: the directory part of the recorded name (cwd-prefixed when relative)."""
    if env.executable is not None and obj is env.executable and host is not None:
        path = host.realpath(_absolute(obj.path, env.cwd))  # main program: realpath of /proc/self/exe
    else:
        path = _absolute(obj.path, env.cwd)
    head = path.rsplit("/", 1)[0]
    return head or "/"


def expand_dst(entry: str, origin: str | None, env: LoaderEnv) -> str | None:
    """Substitute $ORIGIN/$LIB/$PLATFORM; None when $ORIGIN is needed but unknown (glibc drops the element)."""
    if origin is None and "ORIGIN" in entry and _DST.search(entry):
        if any((m.group(1) or m.group(2)) == "ORIGIN" for m in _DST.finditer(entry)):
            return None
    values = {"ORIGIN": origin or "", "LIB": env.lib, "PLATFORM": env.platform}
    return _DST.sub(lambda m: values[m.group(1) or m.group(2)], entry)


def _absolute(path: str, cwd: str) -> str:
    if path.startswith("/"):
        return path
    rel = "/".join(p for p in path.split("/") if p not in ("", "."))
    return cwd.rstrip("/") + "/" + rel if rel else cwd


def _loader_dir(raw: str) -> str:
    """fillin_rpath: trailing slashes are dropped (but "/" stays); an empty element stays empty and
    the loader then opens the bare file name, relative to the current directory."""
    d = raw
    while len(d) > 1 and d.endswith("/"):
        d = d[:-1]
    return d


# -- one candidate file (open_verify) ----------------------------------------------------------------


def _probe(host: Host, path: str, want_class: int, want_machine: str) -> tuple[str, str]:
    """(outcome, reason) for one candidate file, as open_verify judges it."""
    try:
        st = host.stat(path)
    except HostError as exc:
        # ENOENT / EACCES / ENOTDIR: keep looking. ELOOP and the like: glibc gives up on this list.
        if "Too many levels" in exc.reason or "File name too long" in exc.reason:
            return "stopped", exc.reason
        try:
            host.lstat(path)
            return "absent", f"broken symlink ({exc.reason})"
        except HostError:
            return "absent", ""
    import stat as stat_mod

    if stat_mod.S_ISDIR(st.st_mode):
        return "invalid", "cannot read file data: Is a directory"
    try:
        head = host.read_bytes(path, 64)
    except HostError as exc:
        if exc.reason in (os.strerror(errno.EACCES), os.strerror(errno.ENOENT)):
            return "absent", exc.reason
        return "invalid", f"cannot read file data: {exc.reason}"
    ehdr = 64 if want_class == 64 else 52
    if len(head) < ehdr:
        return "invalid", "file too short"
    if head[:4] != b"\x7fELF":
        return "invalid", "invalid ELF header"
    got_class = {1: 32, 2: 64}.get(head[4], 0)
    if got_class != want_class:
        return "skipped", f"wrong ELF class ({got_class}-bit, this process is {want_class}-bit)"
    if head[5] != 1:
        return "invalid", "ELF file data encoding not little-endian"
    if head[6] != 1:
        return "invalid", "ELF file version ident does not match current one"
    if head[7] not in (0, 3):
        return "invalid", "ELF file OS ABI invalid"
    if any(head[9:16]):
        return "invalid", "nonzero padding in e_ident"
    e_type, e_machine, e_version = struct.unpack_from("<HHI", head, 16)
    if e_version != 1:
        return "invalid", "ELF file version does not match current one"
    if want_machine in _EM and e_machine != _EM[want_machine]:
        got = _EM_NAMES.get(e_machine, f"e_machine {e_machine}")
        return "skipped", f"wrong machine ({got}, this process is {want_machine})"
    if e_type not in (2, 3):
        return "invalid", "only ET_DYN and ET_EXEC can be loaded"
    # The header is fine; a file cut short further in fails when the loader maps it.
    info = read_elf(host, path)
    if info.error is not None:
        return "invalid", f"cannot map: {info.error}"
    return "found", ""


def _same_file(host: Host, a: str, b: str) -> bool:
    try:
        sa, sb = host.stat(a), host.stat(b)
    except HostError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


# -- the search --------------------------------------------------------------------------------------


class _Search:
    def __init__(self, host: Host, name: str, requester: ElfInfo | None, env: LoaderEnv):
        self.host, self.name, self.env = host, name, env
        self.steps: list[LoaderStep] = []
        ref = requester if requester is not None and requester.ok else env.executable
        if ref is not None and ref.ok:
            self.want_class, self.want_machine = ref.elf_class, ref.machine
        else:
            self.want_class, self.want_machine = 64, "EM_X86_64"
        self.result: tuple[str, str] | None = None  # (path, source)
        self.error: str | None = None

    def done(self) -> bool:
        return self.result is not None or self.error is not None

    def add(self, source: str, directory: str | None, outcome: str, detail: str) -> None:
        self.steps.append(LoaderStep(source, directory, outcome, detail))

    def try_file(self, source: str, directory: str | None, candidate: str, label: str) -> str:
        """Probe one file; records a step. Returns the outcome."""
        check = _absolute(candidate, self.env.cwd)
        outcome, reason = _probe(self.host, check, self.want_class, self.want_machine)
        shown = directory if directory is None else self._show_dir(directory)
        if outcome == "found":
            for loaded_name, loaded_path in self.env.preloaded.items():
                if _same_file(self.host, check, loaded_path):
                    self.add(source, shown, "found", f"{label}; same file as the already loaded {loaded_name}")
                    self.result = (loaded_path, "already-loaded")
                    return outcome
            self.add(source, shown, "found", label)
            self.result = (check, source)
        else:
            self.add(source, shown, outcome, f"{label}" + (f"; {reason}" if reason else ""))
            if outcome == "invalid":
                self.error = f"{check}: {reason}"
        return outcome

    def _show_dir(self, directory: str) -> str:
        absolute = _absolute(directory, self.env.cwd)
        real = self.host.realpath(absolute)
        return absolute if real == absolute else f"{absolute} (= {real})"

    def search_list(self, source: str, dirs: Sequence[tuple[str, str]]) -> None:
        """dirs: (loader directory string, label). Mirrors open_path over one search list."""
        for directory, label in dirs:
            for sub in self.env.hwcaps_subdirs:
                sub_dir = f"{directory}/{sub}" if directory else sub
                cand = f"{sub_dir}/{self.name}"
                if self.host.exists(_absolute(cand, self.env.cwd)):
                    if self.try_file(source, sub_dir, cand, f"{label} (glibc-hwcaps)") in ("found", "invalid"):
                        return
            cand = self.name if directory == "" else ("" if directory == "/" else directory) + "/" + self.name
            outcome = self.try_file(source, directory, cand, label)
            if outcome in ("found", "invalid", "stopped"):
                return

    def path_list(self, source: str, owner: ElfInfo | None, entries: Sequence[str], kind: str) -> list:
        """Expand one DT_RPATH/DT_RUNPATH/LD_LIBRARY_PATH into (dir, label) pairs, flagging cwd-relative ones."""
        out = []
        seen: set[str] = set()
        origin = None
        if owner is not None:
            origin = origin_of(owner, self.env, self.host)
        elif self.env.executable is not None:
            origin = origin_of(self.env.executable, self.env, self.host)  # DSTs in LD_LIBRARY_PATH
        for i, raw in enumerate(entries):
            where = f"{kind}[{i}]" + (f" of {owner.path}" if owner is not None else "")
            expanded = expand_dst(raw, origin, self.env)
            if expanded is None:
                self.add(source, None, "skipped", f"{where}: {raw!r}; $ORIGIN unknown")
                continue
            directory = _loader_dir(expanded)
            if not directory.startswith("/"):
                what = "empty entry" if raw == "" else f"relative entry {raw!r}"
                self.add(source, _absolute(directory, self.env.cwd), "unsafe",
                         f"{where}: {what} means the current directory")
            if directory in seen:  # fillin_rpath keeps one copy of a directory per list
                continue
            seen.add(directory)
            label = f"{where}: {raw}" if raw != directory else f"{where}"
            out.append((directory, label))
        return out


def resolve(host: Host, soname: str, requester_chain: Sequence[ElfInfo], env: LoaderEnv) -> Resolution:
    """Which file the loader maps for ``soname`` requested by ``requester_chain[0]``.

    ``requester_chain`` is the requesting object followed by the object that loaded it, and so on up
    (for dlopen: the object containing the dlopen() call first). Empty means "the main program".
    """
    requester = requester_chain[0] if requester_chain else None
    s = _Search(host, soname, requester, env)
    req_name = requester.path if requester is not None else None

    for loaded_name, loaded_path in env.preloaded.items():
        if soname in (loaded_name, loaded_path):
            by = env.preload_labels.get(loaded_path)
            s.add("already-loaded", None, "found", f"already loaded as {loaded_name}: {loaded_path}"
                  + (f" (forced in by {by})" if by else ""))
            return Resolution(soname, req_name, loaded_path, "already-loaded", tuple(s.steps))

    if "/" in soname:
        s.try_file("direct-path", None, soname, "a name with '/' is opened as a path")
        return _finish(s, soname, req_name)

    # 2. DT_RPATH up the loader chain, unless the requester has DT_RUNPATH.
    if requester is not None and requester.runpath:
        if requester.rpath:
            s.add("DT_RPATH", None, "skipped",
                  f"DT_RPATH of {requester.path} ignored: it also has DT_RUNPATH")
        else:
            s.add("DT_RPATH", None, "skipped", f"DT_RPATH not searched: {requester.path} has DT_RUNPATH")
    else:
        chain = list(requester_chain)
        if env.executable is not None and not any(o is env.executable for o in chain):
            chain.append(env.executable)
        for obj in chain:
            if obj.runpath:
                if obj.rpath:
                    s.add("DT_RPATH", None, "skipped", f"DT_RPATH of {obj.path} ignored: it has DT_RUNPATH")
                continue
            if obj.rpath:
                s.search_list("DT_RPATH", s.path_list("DT_RPATH", obj, obj.rpath, "DT_RPATH"))
                if s.done():
                    return _finish(s, soname, req_name)

    # 3. LD_LIBRARY_PATH
    if env.ld_library_path:
        s.search_list("LD_LIBRARY_PATH", s.path_list("LD_LIBRARY_PATH", None, env.ld_library_path,
                                                     "LD_LIBRARY_PATH"))
        if s.done():
            return _finish(s, soname, req_name)

    # 4. DT_RUNPATH of the requester only.
    if requester is not None and requester.runpath:
        s.search_list("DT_RUNPATH", s.path_list("DT_RUNPATH", requester, requester.runpath, "DT_RUNPATH"))
        if s.done():
            return _finish(s, soname, req_name)
    for obj in requester_chain[1:]:
        if obj.runpath:
            s.add("DT_RUNPATH", None, "skipped",
                  f"DT_RUNPATH of {obj.path} is not inherited by the objects it loads")
            break

    nodeflib = requester.nodeflib if requester is not None else False
    system = tuple(_loader_dir(d) for d in env.default_dirs)

    # 5. ld.so.cache: the first entry with this name and this ABI's flags; only that one is tried.
    entry = next(
        (e for e in env.ld_cache if e[0] == soname and flags_match(e[2], s.want_class, s.want_machine)), None
    )
    if entry is None:
        s.add("ld.so.cache", None, "absent", f"ld.so.cache: no entry for {soname}")
    elif nodeflib and os.path.dirname(entry[1]) in system:
        s.add("ld.so.cache", os.path.dirname(entry[1]), "skipped",
              f"ld.so.cache entry {entry[1]} ignored: {requester.path} is linked -z nodeflib")
    else:
        s.try_file("ld.so.cache", os.path.dirname(entry[1]), entry[1], f"ld.so.cache entry {soname}")
        if s.done():
            return _finish(s, soname, req_name)

    # 6. default directories
    if nodeflib:
        s.add("default-dirs", None, "skipped", f"default directories not searched: {requester.path} is -z nodeflib")
    else:
        s.search_list("default-dirs", [(d, f"default directory {d}") for d in system])
    return _finish(s, soname, req_name)


def search_order(host: Host, soname: str, requester_chain: Sequence[ElfInfo], env: LoaderEnv) -> tuple[LoaderStep, ...]:
    """Every place :func:`resolve` would try for ``soname``, in order, without probing any file: what the
    planner needs to model a changed LD_LIBRARY_PATH or a newly installed file (fixdnn.plan.model).
    Steps carry outcome ``"order"``; an ld.so.cache step names the cached file, not its directory."""
    requester = requester_chain[0] if requester_chain else None
    s = _Search(host, soname, requester, env)
    out: list[tuple[str, str]] = []
    if requester is None or not requester.runpath:
        chain = list(requester_chain)
        if env.executable is not None and not any(o is env.executable for o in chain):
            chain.append(env.executable)
        for obj in chain:
            if obj.rpath and not obj.runpath:
                out += [("DT_RPATH", d) for d, _ in s.path_list("DT_RPATH", obj, obj.rpath, "DT_RPATH")]
    out += [("LD_LIBRARY_PATH", d) for d, _ in s.path_list("LD_LIBRARY_PATH", None, env.ld_library_path,
                                                           "LD_LIBRARY_PATH")]
    if requester is not None and requester.runpath:
        out += [("DT_RUNPATH", d) for d, _ in s.path_list("DT_RUNPATH", requester, requester.runpath, "DT_RUNPATH")]
    nodeflib = requester.nodeflib if requester is not None else False
    if not nodeflib:
        entry = next((e for e in env.ld_cache if e[0] == soname and flags_match(e[2], s.want_class, s.want_machine)),
                     None)
        if entry is not None:
            out.append(("ld.so.cache", entry[1]))
        out += [("default-dirs", _loader_dir(d)) for d in env.default_dirs]
    return tuple(LoaderStep(src, _absolute(d, env.cwd) if d else env.cwd, "order", src) for src, d in out)


def _finish(s: _Search, soname: str, requester: str | None) -> Resolution:
    if s.result is not None:
        path, source = s.result
        return Resolution(soname, requester, path, source, tuple(s.steps))
    error = s.error or f"{soname}: cannot open shared object file: No such file or directory"
    return Resolution(soname, requester, None, None, tuple(s.steps), error)


def resolve_tree(
    host: Host,
    root_object_path: str,
    env: LoaderEnv,
    wanted: set[str] | None = None,
    *,
    root_loader_chain: Sequence[ElfInfo] = (),
) -> dict[str, Resolution]:
    """Resolve DT_NEEDED of ``root_object_path`` and of everything it pulls in, breadth-first like
    ``_dl_map_object_deps``: a name already mapped (by an earlier object in the walk) is not searched
    again. ``root_loader_chain`` is whatever loaded the root (e.g. a framework library that dlopen()s it).
    Returns every first resolution keyed by the requested name, or only ``wanted`` names if given.
    """
    root = read_elf(host, root_object_path)
    loaded: dict[str, str] = dict(env.preloaded)
    if root.soname:
        loaded.setdefault(root.soname, root_object_path)
    results: dict[str, Resolution] = {}
    queue: deque[tuple[ElfInfo, tuple[ElfInfo, ...]]] = deque([(root, (root, *root_loader_chain))])
    while queue:
        obj, chain = queue.popleft()
        for name in obj.needed:
            if name in results:
                continue
            res = resolve(host, name, chain, _with_preloaded(env, loaded))
            results[name] = res
            if res.path is None or res.source == "already-loaded":
                continue
            dep = read_elf(host, res.path)
            loaded[name] = res.path
            if dep.soname:
                loaded.setdefault(dep.soname, res.path)
            queue.append((dep, (dep, *chain)))
    if wanted is not None:
        return {k: v for k, v in results.items() if k in wanted}
    return results


def _with_preloaded(env: LoaderEnv, loaded: Mapping[str, str]) -> LoaderEnv:
    return replace(env, preloaded=dict(loaded))
