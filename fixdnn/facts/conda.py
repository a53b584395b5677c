"""Conda environments: the package records in ``<prefix>/conda-meta/*.json``.

Each record names the package, its version, build string, channel and every file it put in the prefix;
newer records add ``paths_data`` with a sha256 per file. Records are read once; files are matched by
their realpath so a soname link and the file it points to both map to the owning package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

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
    if prefix and host.is_dir(f"{prefix.rstrip('/')}/conda-meta"):
        return prefix.rstrip("/") or "/"
    return None


def gather(host: Host, prefix: str | None, wanted=None) -> CondaEnv:
    """Read every record of the prefix. ``wanted(rel_path) -> bool`` picks the files whose owner is kept."""
    root = conda_prefix(host, prefix)
    env = CondaEnv(prefix=root)
    if root is None:
        return env
    meta = f"{root}/conda-meta"
    try:
        names = host.listdir(meta)
    except HostError as exc:
        env.unknowns.append(Unknown(f"conda records in {meta}", exc.reason))
        return env
    packages = []
    exact: dict[str, CondaFile] = {}
    via_link: dict[str, CondaFile] = {}
    for name in names:
        if not name.endswith(".json"):
            continue
        path = f"{meta}/{name}"
        try:
            record = json.loads(host.read_text(path, limit=64 << 20))
        except HostError as exc:
            env.unknowns.append(Unknown(f"conda record {path}", exc.reason))
            continue
        except ValueError as exc:
            env.unknowns.append(Unknown(f"conda record {path}", f"not JSON ({str(exc).splitlines()[0]})"))
            continue
        if not isinstance(record, dict):
            env.unknowns.append(Unknown(f"conda record {path}", "not a JSON object"))
            continue
        guess = name[:-5].rsplit("-", 2)
        pkg_name = str(record.get("name") or guess[0])
        version = str(record.get("version") or (guess[1] if len(guess) == 3 else "?"))
        build = str(record.get("build") or (guess[2] if len(guess) == 3 else ""))
        files = record.get("files") if isinstance(record.get("files"), list) else []
        number = record.get("build_number")
        packages.append(CondaPackage(
            name=pkg_name, version=version, build=build, channel=short_channel(record), files=len(files),
            prefix=root, build_number=number if isinstance(number, int) and not isinstance(number, bool) else None))
        if wanted is None:
            continue
        hashes = {}
        paths_data = record.get("paths_data")
        if isinstance(paths_data, dict) and isinstance(paths_data.get("paths"), list):
            for item in paths_data["paths"]:
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
