"""``fixdnn lock -o FILE``: write the target environment as a conda-lock lockfile.

Written with conda-lock's own models, so ``conda-lock render`` and ``conda-lock install`` accept it and
``fixdnn --lock FILE`` (:mod:`fixdnn.facts.lockfile`) reads it back. What goes in:

- every conda package of ``<prefix>/conda-meta/*.json``: name, version, build, channel, url, md5 and
  sha256 from the record, its ``depends`` as dependencies. conda-lock requires an md5 for conda entries;
  a record without one (or without a URL) cannot be locked and is listed in the notes instead.
- every pip distribution on the target's ``sys.path`` that conda did not install (``INSTALLER`` is not
  ``conda``): name and version from the dist-info; URL and sha256 from ``direct_url.json`` (PEP 610) when
  pip recorded where it came from. pip keeps no URL for an ordinary index install, so such an entry's url
  is the placeholder pin ``name==version`` (conda-lock only requires a non-empty url):
  ``conda-lock render -k env`` renders it as ``name == version``, which installs from any index; the
  ``explicit`` kind renders ``# pip name @ name==version``, which pip cannot fetch. The notes say how many.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from fixdnn.facts import condameta, distinfo
from fixdnn.facts.conda import conda_prefix
from fixdnn.facts.lockfile import SUBDIR_NAMES, LockfileError, conda_subdir, first_error, require_conda_lock
from fixdnn.model.facts import Facts
from fixdnn.target.host import Host, HostError


@dataclass(frozen=True)
class Entry:
    """One package to lock, in conda-lock's field names (turned into a ``LockedDependency`` by :func:`write`)."""

    name: str
    manager: str  # conda | pip
    version: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    build: str | None = None
    dependencies: tuple[tuple[str, str], ...] = ()
    placeholder: bool = False  # pip entry whose url is the pin, not a download


@dataclass(frozen=True)
class Collected:
    platform: str
    entries: tuple[Entry, ...]
    channels: tuple[str, ...]
    notes: tuple[str, ...]


def _channel_base(value: str) -> str:
    parts = value.rstrip("/").split("/")
    while len(parts) > 1 and parts[-1] in SUBDIR_NAMES:
        parts.pop()
    return "/".join(parts)


def _conda_depends(depends) -> tuple[tuple[str, str], ...]:
    out: dict[str, str] = {}
    for item in depends if isinstance(depends, list) else ():
        if not isinstance(item, str) or not item.strip():
            continue
        name, _, spec = item.strip().partition(" ")
        out.setdefault(name, spec.strip() or "*")
    return tuple(out.items())


def _conda_entries(host: Host, prefix: str | None, notes: list[str]) -> tuple[list[Entry], list[str], set[str]]:
    root = conda_prefix(host, prefix)
    if root is None:
        return [], [], set()
    entries: list[Entry] = []
    channels: list[str] = []
    subdirs: set[str] = set()
    try:
        found = list(condameta.records(host, root))
    except HostError as exc:
        raise LockfileError(f"cannot read {condameta.meta_dir(root)}: {exc.reason}") from None
    for rec in found:
        if isinstance(rec, condameta.RecordError):
            notes.append(f"not locked: {rec.path} ({rec.reason})")
            continue
        record, path = rec.data, rec.path
        if not all(isinstance(record.get(k), str) and record.get(k) for k in ("name", "version", "build")):
            notes.append(f"not locked: {path} (no name, version or build)")
            continue
        name, version, build = record["name"], record["version"], record["build"]
        channel = record.get("channel") if isinstance(record.get("channel"), str) else ""
        url = record.get("url") if isinstance(record.get("url"), str) else ""
        fn = record.get("fn") if isinstance(record.get("fn"), str) else ""
        if not url and "://" in channel and fn:
            url = f"{channel.rstrip('/')}/{fn}"
        md5 = record.get("md5") if isinstance(record.get("md5"), str) and record.get("md5") else None
        sha = record.get("sha256") if isinstance(record.get("sha256"), str) and record.get("sha256") else None
        if not url or md5 is None:
            missing = " and ".join(w for w, v in (("url", url), ("md5", md5)) if not v)
            notes.append(f"not locked: conda package {name} {version} {build} (its record has no {missing}; "
                         "conda-lock needs both)")
            continue
        if isinstance(record.get("subdir"), str) and record["subdir"] not in ("", "noarch"):
            subdirs.add(record["subdir"])
        base = _channel_base(channel) if channel else _channel_base(url.rsplit("/", 1)[0])
        if base and base not in channels:
            channels.append(base)
        entries.append(Entry(name, "conda", version, url, md5, sha, build, _conda_depends(record.get("depends"))))
    return entries, channels, subdirs


def _pip_depends(requires: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    from packaging.requirements import InvalidRequirement, Requirement

    out: dict[str, str] = {}
    for line in requires:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None and "extra" in str(req.marker):
            continue  # only what the plain install pulls in
        out.setdefault(canonicalize_name(req.name), str(req.specifier) or "*")
    return tuple(out.items())


def _pip_entries(host: Host, facts: Facts, notes: list[str]) -> list[Entry]:
    entries = []
    placeholders = 0
    for dist in sorted(facts.distributions, key=lambda d: d.name):
        if (dist.installer or "").strip().lower() == "conda":
            continue  # its conda record is the lock entry
        url, sha = distinfo.direct_url(host, dist.metadata_dir)
        placeholder = url is None
        if placeholder:
            url = f"{dist.name}=={dist.version}"
            placeholders += 1
        entries.append(Entry(dist.name, "pip", dist.version, url, None, sha, None, _pip_depends(dist.requires),
                             placeholder))
    if placeholders:
        notes.append(f"{placeholders} pip entr{'y has' if placeholders == 1 else 'ies have'} no recorded download "
                     "URL (installed from an index); their url is the pin 'name==version': conda-lock render -k env "
                     "installs them by version, the explicit kind cannot")
    return entries


def collect(host: Host, facts: Facts) -> Collected:
    """Everything :func:`write` puts in the lockfile, as plain values (no conda-lock needed)."""
    notes: list[str] = []
    conda_entries, channels, subdirs = _conda_entries(host, facts.target.prefix, notes)
    platform = conda_subdir(facts.target.platform, facts.target.machine)
    if platform is None:
        if len(subdirs) == 1:
            platform = next(iter(subdirs))
        else:
            raise LockfileError("cannot tell the target's platform (no interpreter to ask, and conda-meta does "
                                "not name exactly one subdir)")
    pip_entries = _pip_entries(host, facts, notes)
    return Collected(platform, tuple(conda_entries + pip_entries), tuple(channels), tuple(notes))


def _content_hash(entries) -> str:
    lines = sorted(f"{e.manager} {e.name} {e.version} {e.build or ''} {e.url}" for e in entries)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def write(path: str | Path, host: Host, facts: Facts) -> Collected:
    """Write the target's packages to ``path`` as a conda-lock lockfile (``version: 1`` on disk)."""
    require_conda_lock()
    from conda_lock.lockfile import write_conda_lock_file
    from conda_lock.lockfile.v1.models import HashModel, LockMeta
    from conda_lock.lockfile.v2prelim.models import LockedDependency, Lockfile
    from conda_lock.models.channel import Channel

    from fixdnn import __version__

    got = collect(host, facts)
    deps = []
    for e in got.entries:
        try:
            deps.append(LockedDependency(
                name=e.name, version=e.version, manager=e.manager, platform=got.platform,
                dependencies=dict(e.dependencies), url=e.url, hash=HashModel(md5=e.md5, sha256=e.sha256),
                build=e.build, categories={"main"}))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise LockfileError(f"cannot lock {e.manager} package {e.name} {e.version}: "
                                f"{first_error(exc)}") from None
    custom = {"generator": f"fixdnn {__version__}"}
    if facts.target.prefix:
        custom["prefix"] = facts.target.prefix
    if facts.target.python_version:
        custom["python_version"] = facts.target.python_version
    lockfile = Lockfile(package=deps, metadata=LockMeta(
        content_hash={got.platform: _content_hash(got.entries)},
        channels=[Channel.from_string(c) for c in got.channels], platforms=[got.platform], sources=[],
        custom_metadata=custom))
    out = Path(path)
    try:
        write_conda_lock_file(lockfile, out, metadata_choices=None, include_help_text=False)
    except OSError as exc:
        raise LockfileError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return got


__all__ = ["Collected", "Entry", "collect", "write"]
