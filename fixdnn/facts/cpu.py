"""The CPU side of a process of the target: OpenMP runtimes, MKL, thread settings and the loader search path.

Static, like every probe: nothing is imported. Libraries are found by name in the places a framework's or
the scientific stack's extension modules reach (``torch/lib``, ``tensorflow/``, ``<dist>.libs`` vendored
by auditwheel, the pip data-file ``<prefix>/lib`` where the ``intel-openmp`` and ``mkl`` wheels put their
libraries, the conda prefix's ``lib/``, LD_LIBRARY_PATH, LD_PRELOAD, /opt/intel), and which one a process
maps is decided by the loader model from each consumer's DT_NEEDED, in one simulated process: a second
request for a SONAME already loaded gets the first file, as ld.so does; different SONAMEs (libiomp5.so and
libomp.so, or an auditwheel-renamed copy) are mapped side by side.

The tables (runtime names per vendor, MKL parts, thread-variable rules, MKL releases that broke a
framework) are data: ``rules/compat/cpu.toml``, loaded by :func:`load_rules`.
"""

from __future__ import annotations

import os
import re
import stat as stat_mod
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from packaging.version import InvalidVersion, Version

from fixdnn.facts.conda import CondaEnv, openmp_flavour
from fixdnn.facts.distributions import library_owners, shared_objects
from fixdnn.facts.elf import ElfInfo, exports_symbol, read_elf
from fixdnn.knowledge.compat import RulesError, line_of, load_toml, need, rules_dir
from fixdnn.model.facts import CpuFacts, Distribution, NativeLib, PathEntry, RuntimeUse, TargetInfo, Unknown
from fixdnn.target.host import Host, HostError

# -- rules ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OmpRuntime:
    vendor: str
    name: str
    pattern: re.Pattern
    registers: bool
    packages: tuple[str, ...]


@dataclass(frozen=True)
class ThreadVar:
    name: str
    kind: str  # int | int-list | kmp-affinity
    min: int
    read_by: str


@dataclass(frozen=True)
class MklBreak:
    framework: str
    conda_package: str
    channels: tuple[str, ...]
    symbol: str
    mkl_from: Version
    fix_pin: str
    message: str
    source: str


@dataclass(frozen=True)
class CpuRules:
    openmp: tuple[OmpRuntime, ...]
    mkl_pattern: re.Pattern
    mkl_roles: dict[str, str]  # part ("avx2") -> role ("dispatch")
    mkl_packages: tuple[str, ...]
    layer_clash: tuple[str, ...]
    layer_default: str
    service_packages: tuple[str, ...]
    force_variable: str
    mkl_breaks: tuple[MklBreak, ...]
    kmp_true: tuple[tuple[str, int], ...]
    thread_vars: tuple[ThreadVar, ...]
    affinity_types: tuple[str, ...]
    affinity_modifiers: tuple[str, ...]
    affinity_granularity: tuple[str, ...]
    onednn: dict
    preload_patterns: tuple[re.Pattern, ...]

    def runtime_of(self, filename: str) -> OmpRuntime | None:
        for rt in self.openmp:
            if rt.pattern.match(filename):
                return rt
        return None

    def mkl_part(self, filename: str) -> tuple[str, str | None] | None:
        m = self.mkl_pattern.match(filename)
        return (m.group(1), m.group(2)) if m else None


def _strings(path: Path, text: str, table: dict, key: str) -> tuple[str, ...]:
    value = need(path, text, table, key, list)
    if not all(isinstance(v, str) for v in value):
        raise RulesError(f"{path}:{line_of(text, key)}: {key} must be a list of strings")
    return tuple(value)


def _regex(path: Path, text: str, key: str, value: str) -> re.Pattern:
    try:
        return re.compile(value)
    except re.error as exc:
        raise RulesError(f"{path}:{line_of(text, key)}: {key} = {value!r} is not a regular expression ({exc})") from None


def load_rules(path: Path | None = None) -> CpuRules:
    return _load_rules(str(path or rules_dir() / "compat" / "cpu.toml"))


@lru_cache(maxsize=4)
def _load_rules(name: str) -> CpuRules:
    path = Path(name)
    data, text = load_toml(path)
    openmp = []
    for row in need(path, text, data, "openmp", list):
        openmp.append(OmpRuntime(
            vendor=need(path, text, row, "vendor", str), name=need(path, text, row, "name", str),
            pattern=_regex(path, text, "pattern", need(path, text, row, "pattern", str)),
            registers=need(path, text, row, "registers", bool), packages=_strings(path, text, row, "packages")))
        if openmp[-1].vendor not in ("intel", "gnu", "llvm"):
            raise RulesError(f"{path}:{line_of(text, 'vendor')}: vendor must be intel, gnu or llvm")
    mkl = need(path, text, data, "mkl", dict)
    roles = {}
    for role in ("rt", "core", "dispatch", "threading", "interface"):
        for part in _strings(path, text, mkl, role):
            roles[part] = role
    layer = need(path, text, data, "mkl_threading_layer", dict)
    breaks = []
    for row in data.get("mkl_break", []):
        try:
            since = Version(need(path, text, row, "mkl_from", str))
        except InvalidVersion:
            raise RulesError(f"{path}:{line_of(text, 'mkl_from')}: mkl_from is not a version") from None
        breaks.append(MklBreak(
            framework=need(path, text, row, "framework", str), conda_package=need(path, text, row, "conda_package", str),
            channels=_strings(path, text, row, "channels"), symbol=need(path, text, row, "symbol", str),
            mkl_from=since, fix_pin=need(path, text, row, "fix_pin", str), message=need(path, text, row, "message", str),
            source=need(path, text, row, "source", str)))
    words = []
    for item in need(path, text, need(path, text, data, "kmp_true", dict), "words", list):
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], int)):
            raise RulesError(f"{path}:{line_of(text, 'words')}: each kmp_true word is [\"word\", min_length]")
        words.append((item[0], item[1]))
    thread_vars = []
    for row in need(path, text, data, "thread_var", list):
        kind = need(path, text, row, "kind", str)
        if kind not in ("int", "int-list", "kmp-affinity"):
            raise RulesError(f"{path}:{line_of(text, 'kind')}: kind must be int, int-list or kmp-affinity, not {kind!r}")
        minimum = row.get("min", 0)
        if not isinstance(minimum, int) or isinstance(minimum, bool):
            raise RulesError(f"{path}:{line_of(text, 'min')}: min must be an int")
        thread_vars.append(ThreadVar(need(path, text, row, "name", str), kind, minimum, str(row.get("read_by", ""))))
    aff = need(path, text, data, "kmp_affinity", dict)
    preload = need(path, text, data, "ld_preload", dict)
    return CpuRules(
        openmp=tuple(openmp),
        mkl_pattern=_regex(path, text, "pattern", need(path, text, mkl, "pattern", str)),
        mkl_roles=roles,
        mkl_packages=_strings(path, text, mkl, "packages"),
        layer_clash=_strings(path, text, layer, "clashes_with_gnu"),
        layer_default=need(path, text, layer, "default", str),
        service_packages=_strings(path, text, layer, "service_packages"),
        force_variable=need(path, text, layer, "force_variable", str),
        mkl_breaks=tuple(breaks),
        kmp_true=tuple(words),
        thread_vars=tuple(thread_vars),
        affinity_types=_strings(path, text, aff, "types"),
        affinity_modifiers=_strings(path, text, aff, "modifiers"),
        affinity_granularity=_strings(path, text, aff, "granularity"),
        onednn=dict(need(path, text, data, "onednn", dict)),
        preload_patterns=tuple(_regex(path, text, "dnn_patterns", p) for p in _strings(path, text, preload, "dnn_patterns")),
    )


def kmp_true(rules: CpuRules, value: str | None) -> bool:
    """Whether Intel/LLVM OpenMP reads ``value`` as true (``__kmp_str_match_true``)."""
    if value is None:
        return False
    for word, minimum in rules.kmp_true:
        i = 0
        while i < len(word) and i < len(value) and word[i].lower() == value[i].lower():
            i += 1
        if i < len(word) and i < len(value):
            continue  # a mismatching character
        if minimum > 0 and i >= minimum:
            return True
        if minimum == 0 and i == len(word) and i == len(value):
            return True
    return False


# -- host facts -------------------------------------------------------------------------------------------


def cpu_count(host: Host) -> tuple[int | None, str | None]:
    """Online CPUs from /sys (read through the host, so --root sees the image's view), else os.cpu_count()."""
    try:
        text = host.read_text("/sys/devices/system/cpu/online", limit=4096).strip()
        total = 0
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            total += (int(hi) - int(lo) + 1) if hi else 1
        if total > 0:
            return total, "/sys/devices/system/cpu/online"
    except (HostError, ValueError):
        pass
    if host.root is None and host.system is None and os.cpu_count():  # this machine's count only if it is the one looked at
        return os.cpu_count(), "os.cpu_count()"
    return None, None


def _user_groups(host: Host) -> set[int] | None:
    if host.root is not None:
        return None
    try:
        return set(os.getgroups()) | {os.getgid()}
    except OSError:
        return None


def _ancestors(path: str) -> list[str]:
    out = []
    p = os.path.normpath(path)
    while True:
        out.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            return out
        p = parent


def writable_by_others(host: Host, path: str, groups: set[int] | None) -> tuple[str, ...]:
    """Directories on the way to ``path`` (and its realpath) that someone else could write into."""
    found = []
    first = {os.path.normpath(path), os.path.normpath(host.realpath(path))}
    candidates = list(dict.fromkeys(_ancestors(path) + _ancestors(host.realpath(path))))
    for directory in candidates:
        try:
            st = host.stat(directory)
        except HostError:
            continue
        if not stat_mod.S_ISDIR(st.st_mode):
            continue
        mode = stat_mod.S_IMODE(st.st_mode)
        sticky = bool(mode & stat_mod.S_ISVTX)
        if mode & stat_mod.S_IWOTH and (directory in first or not sticky):
            why = "world-writable" + (" (sticky, but new files can still be added)" if sticky else "")
            found.append(f"{directory} (mode {mode:04o}, {why})")
        elif mode & stat_mod.S_IWGRP and groups is not None and st.st_gid not in groups and (directory in first or not sticky):
            found.append(f"{directory} (mode {mode:04o}, writable by group {st.st_gid}, not one of yours)")
    return tuple(found)


def search_path(host: Host) -> tuple[PathEntry, ...]:
    entries = []
    groups = _user_groups(host)
    llp = host.env("LD_LIBRARY_PATH")
    if llp is not None and llp != "":
        for index, raw in enumerate(re.split("[:;]", llp)):
            entries.append(_entry(host, "LD_LIBRARY_PATH", index, raw, groups))
    preload = host.env("LD_PRELOAD")
    if preload:
        for index, raw in enumerate(p for p in re.split(r"[: \t\n]", preload) if p):
            entries.append(_entry(host, "LD_PRELOAD", index, raw, groups))
    return tuple(entries)


def _entry(host: Host, variable: str, index: int, raw: str, groups: set[int] | None) -> PathEntry:
    if raw == "":
        return PathEntry(variable, index, raw, "empty")
    if not raw.startswith("/"):
        kind = "name" if variable == "LD_PRELOAD" and "/" not in raw else "relative"
        return PathEntry(variable, index, raw, kind)
    exists = host.exists(raw)
    return PathEntry(variable, index, raw, "absolute", exists=exists, is_dir=host.is_dir(raw),
                     realpath=host.realpath(raw) if exists else None,
                     writable=writable_by_others(host, raw, groups) if exists else ())


# -- libraries --------------------------------------------------------------------------------------------


@dataclass
class _Inventory:
    host: Host
    rules: CpuRules
    entries: dict[str, dict] = field(default_factory=dict)  # realpath -> fields
    order: list[str] = field(default_factory=list)
    scanned: set[str] = field(default_factory=set)

    def classify(self, filename: str) -> tuple[str, str, str, str, str | None] | None:
        """(kind, name, vendor, role, major) for a runtime or MKL file name."""
        rt = self.rules.runtime_of(filename)
        if rt is not None:
            return "openmp", rt.name, rt.vendor, "runtime", None
        part = self.rules.mkl_part(filename)
        if part is not None:
            return "mkl", f"libmkl_{part[0]}", "intel", self.rules.mkl_roles.get(part[0], "other"), part[1]
        return None

    def add(self, path: str, place: str) -> str | None:
        real = self.host.realpath(path)
        if not self.host.is_file(real):
            return None
        name = path.rsplit("/", 1)[-1]
        # The vendor is the file's own: a libgomp.so.1 that links to libomp.so is LLVM's runtime.
        kind = self.classify(real.rsplit("/", 1)[-1]) or self.classify(name)
        if kind is None:
            return None
        entry = self.entries.get(real)
        if entry is None:
            entry = {"path": path, "realpath": real, "kind": kind, "places": []}
            self.entries[real] = entry
            self.order.append(real)
        if place not in entry["places"]:
            entry["places"].append(place)
        return real

    def scan(self, directory: str, place: str) -> None:
        if (directory, place) in self.scanned:
            return
        self.scanned.add((directory, place))
        try:
            names = self.host.listdir(directory)
        except HostError:
            return
        for name in names:
            if self.classify(name) is not None:
                self.add(f"{directory.rstrip('/')}/{name}", place)


def _pip_owners(host: Host, rules: CpuRules, dists: tuple[Distribution, ...]) -> tuple[dict[str, Distribution], list[Unknown]]:
    return library_owners(host, dists, lambda name: rules.runtime_of(name) is not None or rules.mkl_part(name) is not None)


def _shipping_consumers(host: Host, inv: _Inventory, owners: dict[str, Distribution],
                        rules: CpuRules) -> list[tuple[str, str]]:
    """(distribution name, ELF path) for every library of every package that ships its own OpenMP or MKL
    copy (paddlepaddle's paddle/libs/libiomp5.so, diskannpy.libs/libiomp5-<hash>.so ...): whatever the
    package, its extensions are what map that copy. The runtime packages themselves only provide."""
    providers = _runtime_packages(rules)
    out = []
    for dist in {d.name: d for d in owners.values()}.values():
        if dist.name in providers:
            continue
        for path in shared_objects(host, dist):
            if inv.classify(path.rsplit("/", 1)[-1]) is None:
                out.append((dist.name, path))
    return out


def _runtime_packages(rules: CpuRules) -> set[str]:
    names = set(rules.mkl_packages)
    for rt in rules.openmp:
        names.update(rt.packages)
    return names


def _describe(host: Host, rules: CpuRules, entry: dict, pip: dict, conda: CondaEnv) -> NativeLib:
    kind, name, vendor, role, major = entry["kind"]
    real = entry["realpath"]
    elf = read_elf(host, real)
    owner = version = source = sha = None
    dist = pip.get(real) or pip.get(entry["path"])
    cfile = conda.files.get(real) or conda.files.get(entry["path"])
    runtime_pkgs = _runtime_packages(rules)
    if dist is not None:
        owner = f"pip:{dist.name} {dist.version}"
        if dist.name in runtime_pkgs:
            version, source = dist.version, f"distribution {dist.name} {dist.version}"
    elif cfile is not None:
        owner, sha = cfile.label, cfile.sha256
        if cfile.package in runtime_pkgs:
            version, source = cfile.version, cfile.label
    if major is None and elf.soname:
        m = re.search(r"\.so\.(\d+)", elf.soname)
        major = m.group(1) if m else None
    return NativeLib(kind=kind, name=name, vendor=vendor, role=role, path=entry["path"], realpath=real,
                     soname=elf.soname, major=major, version=version, version_source=source, owner=owner,
                     sha256=sha, found_in=tuple(entry["places"]), error=elf.error)


def _site_places(host: Host, target: TargetInfo) -> list[tuple[str, str]]:
    """(directory, place) pairs to scan for runtime and MKL files."""
    out = []
    for index, entry in enumerate(target.sys_path):
        base = entry.rstrip("/")
        for rel in ("torch/lib", "tensorflow", "jaxlib", "intel_openmp", "mkl"):
            out.append((f"{base}/{rel}", f"sys.path[{index}] {rel}"))
        try:
            names = host.listdir(base)
        except HostError:
            continue
        for name in names:
            if name.endswith(".libs"):
                out.append((f"{base}/{name}", f"sys.path[{index}] {name}"))
    for site in dict.fromkeys(target.site_dirs):
        out.append((os.path.normpath(f"{site}/../../../lib"), f"pip data files of {site}"))
    if target.prefix:
        out.append((f"{target.prefix.rstrip('/')}/lib", "environment prefix lib/"))
    for opt in ("/opt/intel/oneapi/mkl/latest/lib", "/opt/intel/oneapi/compiler/latest/lib", "/opt/intel/mkl/lib/intel64",
                "/opt/intel/lib/intel64"):
        out.append((opt, "/opt/intel"))
    return out


def _consumers(host: Host, target: TargetInfo) -> list[tuple[str, str]]:
    """(consumer name, ELF path): extension modules and framework libraries whose DT_NEEDED we follow."""
    out = []
    for entry in dict.fromkeys(target.sys_path):
        base = entry.rstrip("/")
        for consumer, rel in (("numpy", "numpy/_core"), ("numpy", "numpy/core"), ("numpy", "numpy/linalg"),
                              ("scipy", "scipy/linalg"), ("torch", "torch"), ("torch", "torch/lib"),
                              ("tensorflow", "tensorflow"), ("tensorflow", "tensorflow/python"),
                              ("jax", "jaxlib"), ("onnxruntime", "onnxruntime/capi")):
            directory = f"{base}/{rel}"
            try:
                names = host.listdir(directory)
            except HostError:
                continue
            for name in names:
                if ".so" in name and not name.endswith((".py", ".pyi")):
                    out.append((consumer, f"{directory}/{name}"))
    return out


class _Process:
    """One simulated process importing everything: which runtime / MKL file each request maps."""

    def __init__(self, host: Host, rules: CpuRules, inv: _Inventory, env):
        self.host, self.rules, self.inv, self.env = host, rules, inv, env
        self.loaded: dict[str, str] = {}  # soname -> path
        self.uses: list[RuntimeUse] = []

    def _mark(self, soname: str | None, path: str) -> None:
        if soname and soname not in self.loaded:
            self.loaded[soname] = path

    def interesting(self, soname: str) -> bool:
        return self.inv.classify(soname) is not None

    def need(self, consumer: str, requester: ElfInfo, soname: str, depth: int = 0) -> None:
        from fixdnn.facts.loader import resolve

        if soname in self.loaded:
            self.uses.append(RuntimeUse(consumer, requester.path, soname, self.loaded[soname],
                                        "DT_NEEDED: already loaded in the process"))
            return
        env = replace(self.env, preloaded={**self.env.preloaded, **self.loaded})
        res = resolve(self.host, soname, [requester], env)
        if res.path is None:
            self.uses.append(RuntimeUse(consumer, requester.path, soname, None, f"DT_NEEDED: {res.error or 'not found'}"))
            return
        real = self.inv.add(res.path, f"loaded for {consumer}") or self.host.realpath(res.path)
        self.loaded[soname] = real
        self.uses.append(RuntimeUse(consumer, requester.path, soname, real, f"DT_NEEDED via {res.source} ({res.path})"))
        self.follow(consumer, real, depth + 1)

    def follow(self, consumer: str, path: str, depth: int = 0) -> None:
        if depth > 4:
            return
        elf = read_elf(self.host, path)
        if not elf.ok:
            return
        self._mark(elf.soname, path)
        for soname in elf.needed:
            if self.interesting(soname):
                self.need(consumer, elf, soname, depth)

    def direct(self, consumer: str, path: str, how: str) -> None:
        """A library mapped by its path (LD_PRELOAD, a vendored copy loaded by its own extension)."""
        elf = read_elf(self.host, path)
        soname = elf.soname or path.rsplit("/", 1)[-1]
        if soname in self.loaded:
            self.uses.append(RuntimeUse(consumer, path, soname, self.loaded[soname], f"{how}; already loaded"))
            return
        real = self.inv.add(path, how)
        if real is None:
            return
        self.loaded[soname] = real
        self.uses.append(RuntimeUse(consumer, path, soname, real, how))
        self.follow(consumer, real, 1)


def gather(host: Host, target: TargetInfo, dists: tuple[Distribution, ...], conda: CondaEnv, loader_env,
           rules: CpuRules | None = None) -> tuple[CpuFacts, list[Unknown]]:
    rules = rules or load_rules()
    count, count_source = cpu_count(host)
    inv = _Inventory(host, rules)
    for directory, place in _site_places(host, target):
        inv.scan(directory, place)
    for index, raw in enumerate(loader_env.ld_library_path):
        if raw.startswith("/"):
            inv.scan(raw, f"LD_LIBRARY_PATH[{index}]")

    pip_owners, unknowns = _pip_owners(host, rules, dists)
    for path, dist in pip_owners.items():
        inv.add(path, f"installed by {dist.name}")

    proc = _Process(host, rules, inv, loader_env)
    for index, raw in enumerate(p for p in re.split(r"[: \t\n]", host.env("LD_PRELOAD") or "") if p):
        # A bare name is searched like DT_NEEDED; only paths are modelled here (FDN304 reports both).
        if "/" in raw and (inv.classify(raw.rsplit("/", 1)[-1]) or inv.classify(host.realpath(raw).rsplit("/", 1)[-1])):
            proc.direct("LD_PRELOAD", raw, f"LD_PRELOAD[{index}]")
    # Copies vendored by auditwheel are mapped by the extension module next to them: treat each as used.
    for real in list(inv.order):
        entry = inv.entries[real]
        for place in entry["places"]:
            m = re.match(r"sys\.path\[\d+\] (.+)\.libs$", place)
            if m and entry["kind"][0] == "openmp":
                proc.direct(m.group(1), entry["path"], f"vendored in {m.group(1)}.libs")
    followed: set[str] = set()
    for consumer, path in _consumers(host, target) + _shipping_consumers(host, inv, pip_owners, rules):
        name = path.rsplit("/", 1)[-1]
        if inv.classify(name) is not None or path in followed:
            continue
        followed.add(path)
        proc.follow(consumer, path)
    # MKL's runtime dispatcher loads a threading layer by name (MKL_THREADING_LAYER, INTEL by default).
    rt_paths = [u.path for u in proc.uses if u.path and inv.classify(u.path.rsplit("/", 1)[-1]) and
                inv.classify(u.path.rsplit("/", 1)[-1])[3] == "rt"]
    for rt_path in dict.fromkeys(rt_paths):
        major = (inv.classify(rt_path.rsplit("/", 1)[-1]) or (None,) * 5)[4]
        layer = (host.env("MKL_THREADING_LAYER") or rules.layer_default).strip().lower()
        part = "sequential" if layer == "sequential" else f"{layer}_thread"
        soname = f"libmkl_{part}.so" + (f".{major}" if major else "")
        rt_elf = read_elf(host, rt_path)
        if rt_elf.ok:
            proc.need("mkl", rt_elf, soname)

    libraries = tuple(_describe(host, rules, inv.entries[r], pip_owners, conda) for r in inv.order)
    symbols: dict[str, bool | None] = {}
    used = {u.path for u in proc.uses if u.path}
    mkl_used = [lib for lib in libraries if lib.kind == "mkl" and (lib.path in used or lib.realpath in used)
                and lib.role in ("rt", "core")]
    for brk in rules.mkl_breaks:
        answers = [exports_symbol(host, lib.realpath, brk.symbol) for lib in mkl_used]
        symbols[brk.symbol] = True if any(a is True for a in answers) else (
            False if answers and all(a is False for a in answers) else None)
    facts = CpuFacts(cpu_count=count, cpu_count_source=count_source, libraries=libraries,
                     uses=tuple(proc.uses), search_path=search_path(host), mkl_symbols=symbols,
                     conda_openmp=openmp_flavour(conda.packages))
    return facts, unknowns
