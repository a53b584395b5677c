"""Installed distributions of the target, read from the dist-info folders on its ``sys.path``.

Only the METADATA header is parsed (the long description can be megabytes), and the first copy of a
name on ``sys.path`` wins, as it does for ``importlib.metadata``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from fixdnn.facts import distinfo
from fixdnn.model.facts import Distribution, Unknown
from fixdnn.target.host import Host, HostError


def read_one(host: Host, found: distinfo.Found) -> Distribution | Unknown:
    meta_dir, files = found.path, found.files
    meta_name = distinfo.metadata_name(found.folder)
    if meta_name not in files:
        return Unknown(f"distribution {meta_dir}", f"no {meta_name} file")
    try:
        meta = distinfo.read_metadata(host, meta_dir)
    except HostError as exc:
        return Unknown(f"distribution {meta_dir}", exc.reason)
    except distinfo.DistInfoError as exc:
        return Unknown(f"distribution {meta_dir}", str(exc))
    installer = None
    if "INSTALLER" in files:
        try:
            installer = host.read_text(f"{meta_dir}/INSTALLER", limit=256).strip() or None
        except HostError:
            installer = None
    return Distribution(
        name=meta.canonical,
        display_name=meta.name,
        version=meta.version,
        location=found.location,
        metadata_dir=meta_dir,
        requires=meta.requires,
        installer=installer,
        record=distinfo.record_file(meta_dir, files),
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
            for found in distinfo.scan(host, location):
                if isinstance(found, tuple):
                    unknowns.append(Unknown(f"distribution {found[0]}", found[1]))
                    continue
                dist = read_one(host, found)
                if isinstance(dist, Unknown):
                    unknowns.append(dist)
                elif dist.name not in seen:
                    seen[dist.name] = dist
        except HostError as exc:
            if host.exists(location):
                unknowns.append(Unknown(f"sys.path entry {location}", exc.reason))
    return tuple(seen.values()), unknowns


def _shared_objects(host: Host, dist: Distribution) -> list[str] | HostError:
    """Paths (relative to the site dir) of the shared objects a distribution's RECORD lists."""
    try:
        st = host.stat(dist.record)
        key = (dist.record, host.root, st.st_size, st.st_mtime_ns, st.st_ino)  # a reinstall is a new key
        hit = _SO_CACHE.get(key)
        if hit is not None:
            return hit
        text = distinfo.read_record(host, dist.record)
    except HostError as exc:
        return exc
    except distinfo.DistInfoError as exc:
        return HostError(dist.record, str(exc))
    rows = [row[0] for _n, row, _e in distinfo.record_rows(text) if row and ".so" in row[0]] if ".so" in text else []
    _SO_CACHE[key] = rows
    return rows


_SO_CACHE: dict[tuple, list[str]] = {}  # one read of each RECORD per process, whoever asks


def shared_objects(host: Host, dist: Distribution) -> list[str]:
    """Absolute paths of the shared objects ``dist`` installed (from its RECORD; [] when unreadable)."""
    if not distinfo.is_record(dist.record):
        return []
    rows = _shared_objects(host, dist)
    return [] if isinstance(rows, HostError) else [os.path.normpath(f"{dist.location}/{rel}") for rel in rows]


def library_owners(host: Host, dists: Iterable[Distribution], wanted: Callable[[str], bool],
                   only: Callable[[Distribution], bool] = lambda d: True
                   ) -> tuple[dict[str, Distribution], list[Unknown]]:
    """{path: distribution} for the shared objects whose file name ``wanted`` accepts, from RECORD files
    (keyed by both the normalised and the resolved path). Unreadable RECORDs become unknown facts."""
    owners: dict[str, Distribution] = {}
    unknowns: list[Unknown] = []
    for dist in dists:
        if not distinfo.is_record(dist.record) or not only(dist):
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
