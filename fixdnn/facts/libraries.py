"""Every copy of cuDNN (each sub-library) and of the CUDA runtime libraries, wherever a process could find it.

Places, in the order a user thinks of them: ``nvidia/*/lib`` under each ``sys.path`` entry, the conda
prefix, ``LD_LIBRARY_PATH``, ``LD_PRELOAD``, the loader cache, ``CUDA_HOME``/``CUDA_PATH``/``CUDNN_PATH``,
``/usr/local/cuda*``, default directories, and a shallow scan of ``/opt``. Only directory listings and small
headers are read; the libraries themselves are opened only for their ELF dynamic section.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from fixdnn.facts import condameta
from fixdnn.facts.distributions import library_owners
from fixdnn.facts.elf import read_elf
from fixdnn.model.facts import Distribution, LibraryCopy, TargetInfo, Unknown
from fixdnn.target.host import Host, HostError

LIB_NAME = re.compile(r"^lib(cudnn(?:_[a-z_]+)?|cudart|cublasLt|cublas|nvrtc|cuda)\.so(?:\.(\d+(?:\.\d+)*))?$")
_HEADER_DEFINE = re.compile(r"#define\s+CUDNN_(MAJOR|MINOR|PATCHLEVEL)\s+(\d+)")
_DEFAULT_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib")
_OWNED_PREFIXES = ("nvidia-", "cuda-", "torch", "tensorflow", "tf-nightly", "jax", "onnxruntime", "cupy")
_CONDA_PACKAGES = re.compile(r"^(cudnn|cuda-.*|cudatoolkit|libcublas.*|libcudnn.*|libnvrtc.*|cuda)$")


def family_of(filename: str) -> tuple[str, str | None] | None:
    """('cudnn_graph', '9') for 'libcudnn_graph.so.9'; None for anything we do not track."""
    m = LIB_NAME.match(filename)
    if not m:
        return None
    return m.group(1), m.group(2)


@dataclass
class _Inventory:
    host: Host
    copies: dict[str, dict] = field(default_factory=dict)  # realpath -> fields
    order: list[str] = field(default_factory=list)
    unknowns: list[Unknown] = field(default_factory=list)
    scanned: set[str] = field(default_factory=set)

    def add_file(self, path: str, place: str) -> None:
        name = path.rsplit("/", 1)[-1]
        fam = family_of(name)
        if fam is None:
            return
        real = self.host.realpath(path)
        entry = self.copies.get(real)
        if entry is None:
            entry = {"family": fam[0], "path": path, "realpath": real, "places": [], "aliases": []}
            self.copies[real] = entry
            self.order.append(real)
        elif len(name) < len(entry["path"].rsplit("/", 1)[-1]):
            entry["path"] = path  # show the name the loader asks for (libcudnn.so.9), not libcudnn.so.9.1.0
        if place not in entry["places"]:
            entry["places"].append(place)
        if path not in entry["aliases"]:
            entry["aliases"].append(path)

    def scan_dir(self, directory: str, place: str, *, report_errors: bool = False) -> None:
        key = (directory, place)
        if str(key) in self.scanned:
            return
        self.scanned.add(str(key))
        try:
            names = self.host.listdir(directory)
        except HostError as exc:
            if report_errors and self.host.exists(directory):
                self.unknowns.append(Unknown(f"library directory {directory} ({place})", exc.reason))
            return
        for name in names:
            if family_of(name) is not None:
                self.add_file(f"{directory.rstrip('/')}/{name}", place)


def _sys_path_dirs(host: Host, target: TargetInfo) -> list[tuple[str, str]]:
    out = []
    for index, entry in enumerate(target.sys_path):
        nvidia = f"{entry.rstrip('/')}/nvidia"
        for sub in host.glob_dirs(nvidia):
            out.append((f"{sub}/lib", f"sys.path[{index}]"))
    return out


def _split_paths(value: str | None) -> list[str]:
    return [p for p in (value or "").split(":")]


def _cuda_roots(host: Host) -> list[tuple[str, str]]:
    roots = []
    for var in ("CUDNN_PATH", "CUDA_PATH", "CUDA_HOME"):
        value = host.env(var)
        if value:
            roots.append((value, var))
    try:
        for name in host.listdir("/usr/local"):
            if name == "cuda" or name.startswith("cuda-"):
                roots.append((f"/usr/local/{name}", f"/usr/local/{name}"))
    except HostError:
        pass
    try:
        for name in host.listdir("/opt"):
            roots.append((f"/opt/{name}", "/opt scan"))
            for sub in host.glob_dirs(f"/opt/{name}"):
                roots.append((sub, "/opt scan"))
    except HostError:
        pass
    return roots


def _owners_pip(host: Host, distributions: tuple[Distribution, ...]) -> tuple[dict[str, Distribution], list[Unknown]]:
    return library_owners(host, distributions, lambda name: family_of(name) is not None,
                          only=lambda d: d.name.startswith(_OWNED_PREFIXES))


def _owners_conda(host: Host, prefix: str | None) -> dict[str, str]:
    owners: dict[str, str] = {}
    if not prefix:
        return owners
    try:
        for record in condameta.records(host, prefix, lambda name: bool(_CONDA_PACKAGES.match(name))):
            if isinstance(record, condameta.RecordError):
                continue
            label = f"conda:{record.name} {record.version}"
            for rel in record.files:
                if isinstance(rel, str) and family_of(rel.rsplit("/", 1)[-1]):
                    owners[host.realpath(f"{prefix.rstrip('/')}/{rel}")] = label
    except HostError:
        pass
    return owners


def _header_version(host: Host, lib_dir: str) -> str | None:
    for rel in ("../include/cudnn_version.h", "../include/cudnn_version_v9.h", "../include/cudnn_version_v8.h",
                "../../include/cudnn_version.h", "../include/cudnn.h"):
        path = os.path.normpath(f"{lib_dir}/{rel}")
        try:
            text = host.read_text(path, limit=64 << 10)
        except HostError:
            continue
        found = dict((k, v) for k, v in _HEADER_DEFINE.findall(text))
        if "MAJOR" in found and "MINOR" in found:
            return f"{found['MAJOR']}.{found['MINOR']}.{found.get('PATCHLEVEL', '0')}"
    return None


def _dist_version(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:3])


def describe(host: Host, entry: dict, pip_owners: dict, conda_owners: dict) -> LibraryCopy:
    real = entry["realpath"]
    family = entry["family"]
    elf = read_elf(host, real)
    version = source = None
    full = family_of(real.rsplit("/", 1)[-1])
    if full and full[1] and full[1].count(".") >= 1:
        version, source = full[1], f"file name {real.rsplit('/', 1)[-1]}"
    owner = None
    dist = pip_owners.get(real)
    if dist is not None:
        owner = f"pip:{dist.name} {dist.version}"
    elif real in conda_owners:
        owner = conda_owners[real]
    if version is None and family.startswith("cudnn"):
        header = _header_version(host, real.rsplit("/", 1)[0])
        if header:
            version, source = header, "cudnn_version.h"
    if version is None and owner is not None:
        owned = owner.split(" ", 1)[1]
        if owner.startswith("pip:") and dist is not None and (dist.name.startswith("nvidia-") or dist.name.startswith("cuda-")):
            version, source = _dist_version(owned), f"distribution {dist.name} {dist.version}"
        elif owner.startswith("conda:"):
            version, source = _dist_version(owned), owner
    if version is None:
        soname = elf.soname or entry["path"].rsplit("/", 1)[-1]
        m = family_of(soname)
        if m and m[1]:
            version, source = m[1], f"SONAME {soname} (major only)"
    return LibraryCopy(
        family=family,
        path=entry["path"],
        realpath=real,
        soname=elf.soname,
        version=version,
        version_source=source,
        owner=owner,
        found_in=tuple(entry["places"]),
        error=elf.error,
        aliases=tuple(a for a in entry["aliases"] if a != entry["path"]),
    )


def gather(
    host: Host,
    target: TargetInfo,
    distributions: tuple[Distribution, ...],
    ld_cache: tuple = (),
    extra_paths: tuple[tuple[str, str], ...] = (),
) -> tuple[tuple[LibraryCopy, ...], list[Unknown]]:
    inv = _Inventory(host)
    for directory, place in _sys_path_dirs(host, target):
        inv.scan_dir(directory, place)
    for index, entry in enumerate(target.sys_path):
        for rel in ("torch/lib", "jaxlib/cuda", "cupy/.data/lib"):
            inv.scan_dir(f"{entry.rstrip('/')}/{rel}", f"sys.path[{index}] {rel}")
    if target.kind == "conda" and target.prefix:
        inv.scan_dir(f"{target.prefix.rstrip('/')}/lib", "conda prefix")
    for index, entry in enumerate(_split_paths(host.env("LD_LIBRARY_PATH"))):
        if entry and entry.startswith("/"):
            inv.scan_dir(entry, f"LD_LIBRARY_PATH[{index}]", report_errors=True)
    for index, entry in enumerate(re.split(r"[: ]", host.env("LD_PRELOAD") or "")):
        if entry and family_of(entry.rsplit("/", 1)[-1]) and host.exists(entry):
            inv.add_file(entry, f"LD_PRELOAD[{index}]")
    for soname, path, *_ in ld_cache:
        if family_of(soname) is not None and host.exists(path):
            inv.add_file(path, "ld.so.cache")
    for root, place in _cuda_roots(host):
        for lib in ("lib", "lib64", "targets/x86_64-linux/lib"):
            inv.scan_dir(f"{root.rstrip('/')}/{lib}", place)
    for directory in _DEFAULT_DIRS:
        inv.scan_dir(directory, "default directory")
    for path, place in extra_paths:
        inv.add_file(path, place)
    pip_owners, unknowns = _owners_pip(host, distributions)
    conda_owners = _owners_conda(host, target.prefix)
    copies = tuple(describe(host, inv.copies[real], pip_owners, conda_owners) for real in inv.order)
    return copies, inv.unknowns + unknowns
