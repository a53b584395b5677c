"""Conda environments: the package records in ``<prefix>/conda-meta/*.json``.

Each record names the package, its version, build string, channel and every file it put in the prefix;
newer records add ``paths_data`` with a sha256 per file. Records are read once; files are matched by
their realpath so a soname link and the file it points to both map to the owning package.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fixdnn.facts import condameta
from fixdnn.model.facts import CondaPackage, Unknown
from fixdnn.target.host import Host, HostError

_PLATFORM_SUBDIRS = {"noarch", "linux-64", "linux-aarch64", "linux-ppc64le", "linux-s390x", "osx-64", "osx-arm64",
                     "win-64", "win-32", "linux-32"}


def short_channel(record: dict) -> str | None:
    """'conda-forge' for schannel / a channel URL / 'pkgs/main' style names; None when absent."""
    value = record.get("schannel") or record.get("channel")
    if not isinstance(value, str) or not value.strip():
        return None
    parts = [p for p in value.strip().rstrip("/").split("/") if p]
    while parts and parts[-1] in _PLATFORM_SUBDIRS:
        parts.pop()
    return parts[-1] if parts else None


@dataclass(frozen=True)
class CondaFile:
    package: str
    version: str
    sha256: str | None

    @property
    def label(self) -> str:
        return f"conda:{self.package} {self.version}"


@dataclass
class CondaEnv:
    prefix: str | None = None
    packages: tuple[CondaPackage, ...] = ()
    files: dict[str, CondaFile] = field(default_factory=dict)  # realpath -> owner
    unknowns: list[Unknown] = field(default_factory=list)

    def package(self, name: str) -> CondaPackage | None:
        for pkg in self.packages:
            if pkg.name == name:
                return pkg
        return None


def conda_prefix(host: Host, prefix: str | None) -> str | None:
    if prefix and condameta.is_conda_prefix(host, prefix):
        return prefix.rstrip("/") or "/"
    return None


def gather(host: Host, prefix: str | None, wanted=None) -> CondaEnv:
    """Read every record of the prefix. ``wanted(rel_path) -> bool`` picks the files whose owner is kept."""
    root = conda_prefix(host, prefix)
    env = CondaEnv(prefix=root)
    if root is None:
        return env
    packages = []
    exact: dict[str, CondaFile] = {}
    via_link: dict[str, CondaFile] = {}
    try:
        for record in condameta.records(host, root):
            if isinstance(record, condameta.RecordError):
                env.unknowns.append(Unknown(f"conda record {record.path}", record.reason))
                continue
            pkg_name, version = record.name, record.version
            files = record.files
            number = record.data.get("build_number")
            packages.append(CondaPackage(
                name=pkg_name, version=version, build=record.build, channel=short_channel(record.data),
                files=len(files), prefix=root,
                build_number=number if isinstance(number, int) and not isinstance(number, bool) else None))
            if wanted is None:
                continue
            hashes = {}
            for item in record.paths or ():
                if isinstance(item, dict) and isinstance(item.get("_path"), str):
                    digest = item.get("sha256")
                    hashes[item["_path"]] = digest if isinstance(digest, str) else None
            for rel in list(files) + [p for p in hashes if p not in files]:
                if not isinstance(rel, str) or not wanted(rel):
                    continue
                owner = CondaFile(pkg_name, version, hashes.get(rel))
                full = f"{root}/{rel}"
                exact.setdefault(full, owner)
                via_link.setdefault(host.realpath(full), owner)
    except HostError as exc:
        env.unknowns.append(Unknown(f"conda records in {condameta.meta_dir(root)}", exc.reason))
        return env
    # A file's own record wins over a record that only owns a link to it (_openmp_mutex's libgomp.so.1).
    env.files = {**via_link, **exact}
    env.packages = tuple(sorted(packages, key=lambda p: p.name))
    return env


def openmp_flavour(packages: tuple[CondaPackage, ...]) -> str | None:
    """gnu | llvm from ``_openmp_mutex``'s build string (``4_gnu``, ``5_llvm``, ``2_kmp_llvm``)."""
    for pkg in packages:
        if pkg.name == "_openmp_mutex":
            build = pkg.build.lower()
            if "llvm" in build:
                return "llvm"
            if "gnu" in build:
                return "gnu"
    return None
