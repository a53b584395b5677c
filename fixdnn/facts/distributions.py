"""Installed distributions of the target, read from the dist-info folders on its ``sys.path``.

Only the METADATA header is parsed (the long description can be megabytes), and the first copy of a
name on ``sys.path`` wins, as it does for ``importlib.metadata``.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Iterable
from email.parser import HeaderParser

from fixdnn.model.facts import Distribution, Unknown
from fixdnn.target.host import Host, HostError

_HEADER_LIMIT = 256 << 10


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _header(text: str) -> str:
    end = text.find("\n\n")
    return text if end < 0 else text[:end]


def read_one(host: Host, location: str, folder: str) -> Distribution | Unknown:
    meta_dir = f"{location.rstrip('/')}/{folder}"
    try:
        files = set(host.listdir(meta_dir))
    except HostError as exc:
        return Unknown(f"distribution {meta_dir}", exc.reason)
    meta_name = "METADATA" if folder.endswith(".dist-info") else "PKG-INFO"
    if meta_name not in files:
        return Unknown(f"distribution {meta_dir}", f"no {meta_name} file")
    try:
        text = host.read_text(f"{meta_dir}/{meta_name}", limit=_HEADER_LIMIT)
    except HostError as exc:
        return Unknown(f"distribution {meta_dir}", exc.reason)
    headers = HeaderParser().parsestr(_header(text))
    name, version = headers.get("Name"), headers.get("Version")
    if not name or not version:
        return Unknown(f"distribution {meta_dir}", f"{meta_name} has no Name or Version")
    installer = None
    if "INSTALLER" in files:
        try:
            installer = host.read_text(f"{meta_dir}/INSTALLER", limit=256).strip() or None
        except HostError:
            installer = None
    record = None
    if "RECORD" in files:
        record = f"{meta_dir}/RECORD"
    elif "installed-files.txt" in files:
        record = f"{meta_dir}/installed-files.txt"
    return Distribution(
        name=canonical(name.strip()),
        display_name=name.strip(),
        version=version.strip(),
        location=location,
        metadata_dir=meta_dir,
        requires=tuple(r.strip() for r in (headers.get_all("Requires-Dist") or ())),
        installer=installer,
        record=record,
    )


def gather(host: Host, search_path: tuple[str, ...]) -> tuple[tuple[Distribution, ...], list[Unknown]]:
    seen: dict[str, Distribution] = {}
    unknowns: list[Unknown] = []
    visited: set[str] = set()
    for location in search_path:
        if location in visited:
            continue
        visited.add(location)
        try:
            names = host.listdir(location)
        except HostError as exc:
            if host.exists(location):
                unknowns.append(Unknown(f"sys.path entry {location}", exc.reason))
            continue
        for folder in names:
            if not (folder.endswith(".dist-info") or folder.endswith(".egg-info")):
                continue
            dist = read_one(host, location, folder)
            if isinstance(dist, Unknown):
                unknowns.append(dist)
            elif dist.name not in seen:
                seen[dist.name] = dist
    return tuple(seen.values()), unknowns


def _shared_objects(host: Host, dist: Distribution) -> list[str] | HostError:
    """Paths (relative to the site dir) of the shared objects a distribution's RECORD lists."""
    try:
        st = host.stat(dist.record)
        key = (dist.record, host.root, st.st_size, st.st_mtime_ns, st.st_ino)  # a reinstall is a new key
        hit = _SO_CACHE.get(key)
        if hit is not None:
            return hit
        text = host.read_text(dist.record, limit=64 << 20)
    except HostError as exc:
        return exc
    rows = [row[0] for row in csv.reader(line for line in text.splitlines() if ".so" in line) if row]
    _SO_CACHE[key] = rows
    return rows


_SO_CACHE: dict[tuple, list[str]] = {}  # one read of each RECORD per process, whoever asks


def library_owners(host: Host, dists: Iterable[Distribution], wanted: Callable[[str], bool],
                   only: Callable[[Distribution], bool] = lambda d: True
                   ) -> tuple[dict[str, Distribution], list[Unknown]]:
    """{path: distribution} for the shared objects whose file name ``wanted`` accepts, from RECORD files
    (keyed by both the normalised and the resolved path). Unreadable RECORDs become unknown facts."""
    owners: dict[str, Distribution] = {}
    unknowns: list[Unknown] = []
    for dist in dists:
        if not dist.record or not dist.record.endswith("RECORD") or not only(dist):
            continue
        rows = _shared_objects(host, dist)
        if isinstance(rows, HostError):
            unknowns.append(Unknown(f"RECORD of {dist.display_name}", rows.reason))
            continue
        for rel in rows:
            if not wanted(rel.rsplit("/", 1)[-1]):
                continue
            full = os.path.normpath(f"{dist.location}/{rel}")
            owners[full] = dist
            owners[host.realpath(full)] = dist
    return owners, unknowns
