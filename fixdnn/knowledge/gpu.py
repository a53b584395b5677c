"""The GPU tables of ``rules/compat/gpu.toml``: compute capability by name, PTX ISA -> CUDA release,
driver -> newest CUDA, where each framework keeps its kernels, and the architectures of torch's variants.

Also the one rule of which compiled code runs on which GPU (:func:`coverage`), shared by the symptoms
and the plan.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from fixdnn.knowledge.compat import RulesError, line_of, load_toml, need


@dataclass(frozen=True)
class GpuName:
    match: str
    cc: str
    datacenter: bool = False


@dataclass(frozen=True)
class TorchBuild:
    cuda: str
    local: str  # the wheel's local version label: "cu130"
    releases: SpecifierSet
    sass: tuple[str, ...]
    ptx: tuple[str, ...]


@dataclass(frozen=True)
class GpuTables:
    names: tuple[GpuName, ...]
    ptx_cuda: dict[str, str]  # PTX ISA "9.0" -> CUDA "13.0"
    cuda_driver: tuple[tuple[str, str], ...]  # (CUDA, lowest driver), oldest first
    kernels: dict[str, tuple[str, ...]]  # framework -> globs under its site directory
    torch_builds: tuple[TorchBuild, ...]

    def by_name(self, name: str | None) -> GpuName | None:
        """The longest table entry that names this GPU, matched as whole words, case-insensitively."""
        if not name:
            return None
        hits = [g for g in self.names if re.search(rf"(?<![\w-]){re.escape(g.match)}(?!\w)", name, re.I)]
        return max(hits, key=lambda g: len(g.match), default=None)

    def cuda_for_ptx(self, isa: str | None) -> str | None:
        return self.ptx_cuda.get(isa) if isa else None

    def cuda_of_driver(self, driver: str | None) -> str | None:
        """The newest CUDA release whose lowest driver ``driver`` reaches; None when unknown or too old."""
        try:
            have = Version(driver) if driver else None
        except InvalidVersion:
            return None
        if have is None:
            return None
        best = None
        for cuda, floor in self.cuda_driver:
            if have >= Version(floor):
                best = cuda
        return best

    def driver_for_cuda(self, cuda: str | None) -> str | None:
        """The lowest driver of a CUDA release (or of the first listed release after it)."""
        if not cuda:
            return None
        want = _vt(cuda)
        for release, floor in self.cuda_driver:
            if _vt(release) >= want:
                return floor
        return None


def _vt(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version)[:2])


def cc_number(cc: str | None) -> int | None:
    """90 for "9.0", 120 for "12.0"; None when not a capability."""
    m = re.fullmatch(r"(\d+)\.(\d)", (cc or "").strip())
    return int(m.group(1)) * 10 + int(m.group(2)) if m else None


def _arch(arch: str) -> tuple[int, str] | None:
    m = re.fullmatch(r"(?:sm|compute)_(\d+)([af]?)", arch)
    return (int(m.group(1)), m.group(2)) if m else None


def sass_runs(arch: str, cc: int) -> bool:
    """Machine code for sm_XY runs on a GPU of the same major with minor >= Y; sm_XYa only on X.Y itself;
    sm_XYf on the same family (same major, minor >= Y)."""
    parsed = _arch(arch)
    if parsed is None:
        return False
    number, suffix = parsed
    if suffix == "a":
        return number == cc
    return number // 10 == cc // 10 and number % 10 <= cc % 10


def ptx_runs(arch: str, cc: int) -> bool:
    """PTX for compute_XY is JIT-compiled for any GPU of capability >= X.Y; the ``a`` and ``f`` flavours
    only where their machine code would run."""
    parsed = _arch(arch)
    if parsed is None:
        return False
    return sass_runs(arch, cc) if parsed[1] else parsed[0] <= cc


def coverage(sass: tuple[str, ...], ptx: tuple[str, ...], cc: str | None) -> str | None:
    """"sass" (machine code runs), "ptx" (only a JIT from PTX), "none", or None when the GPU's capability
    is unknown."""
    number = cc_number(cc)
    if number is None:
        return None
    if any(sass_runs(a, number) for a in sass):
        return "sass"
    if any(ptx_runs(a, number) for a in ptx):
        return "ptx"
    return "none"


def load(directory: Path) -> GpuTables:
    path = directory / "gpu.toml"
    data, text = load_toml(path)
    names = []
    for row in need(path, text, data, "gpu", list):
        match = need(path, text, row, "match", str, "gpu")
        cc = need(path, text, row, "cc", str, "gpu")
        if cc_number(cc) is None:
            raise RulesError(f"{path}:{line_of(text, 'cc')}: cc = {cc!r} is not a compute capability like '9.0'")
        names.append(GpuName(match, cc, bool(row.get("datacenter", False))))
    ptx = {str(k): str(v) for k, v in need(path, text, data, "ptx", dict).items()}
    drivers = []
    for row in need(path, text, data, "cuda_driver", list):
        cuda = need(path, text, row, "cuda", str, "cuda_driver")
        driver = need(path, text, row, "driver", str, "cuda_driver")
        try:
            Version(driver)
        except InvalidVersion:
            raise RulesError(f"{path}:{line_of(text, 'driver')}: driver = {driver!r} is not a version") from None
        drivers.append((cuda, driver))
    drivers.sort(key=lambda row: _vt(row[0]))
    kernels = {str(k): tuple(v) for k, v in need(path, text, data, "kernels", dict).items()}
    builds = []
    for row in need(path, text, data, "torch_build", list):
        try:
            releases = SpecifierSet(need(path, text, row, "releases", str, "torch_build"))
        except InvalidSpecifier:
            raise RulesError(f"{path}:{line_of(text, 'releases')}: releases must be a version specifier") from None
        arches = {}
        for key in ("sass", "ptx"):
            arches[key] = tuple(need(path, text, row, key, list, "torch_build"))
            bad = [a for a in arches[key] if _arch(a) is None]
            if bad:
                raise RulesError(f"{path}:{line_of(text, key)}: {key} has {bad[0]!r}, not an architecture like 'sm_90'")
        builds.append(TorchBuild(need(path, text, row, "cuda", str, "torch_build"),
                                 need(path, text, row, "local", str, "torch_build"), releases,
                                 arches["sass"], arches["ptx"]))
    return GpuTables(tuple(names), ptx, tuple(drivers), kernels, tuple(builds))
