"""conda-lock lockfiles: write the target environment as one, read one back, and compare it with the facts.

Writing and reading use conda-lock's own models (``conda_lock.lockfile``), so ``conda-lock render`` and
``conda-lock install`` accept what fixdnn writes and fixdnn reads what conda-lock writes. conda-lock is the
optional extra ``fixdnn[conda]`` (112 MB, 0.5 s to import): it is imported inside the functions that need it,
never at module import, and its absence is :class:`CondaLockMissing` (one line saying how to install it).

What goes into a lockfile written by :func:`write`:

- every conda package of ``<prefix>/conda-meta/*.json``: name, version, build, channel, url, md5 and
  sha256 from the record, its ``depends`` as dependencies. conda-lock requires an md5 for conda entries;
  a record without one (or without a URL) cannot be locked and is listed in the notes instead.
- every pip distribution on the target's ``sys.path`` that conda did not install (``INSTALLER`` is not
  ``conda``): name and version from the dist-info; URL and sha256 from ``direct_url.json`` (PEP 610) when
  pip recorded where it came from. pip keeps no URL for an ordinary index install, so such an entry's url
  is the placeholder pin ``name==version`` (conda-lock only requires a non-empty url):
  ``conda-lock render -k env`` renders it as ``name == version``, which installs from any index; the
  ``explicit`` kind renders ``# pip name @ name==version``, which pip cannot fetch. The notes say how many.

:func:`drift` is pure and needs no conda-lock: it compares the plain :class:`~fixdnn.model.facts.LockFacts`
(made by :func:`read`) with the installed packages in the facts.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from fixdnn.facts import condameta
from fixdnn.model.facts import Facts, LockedPackage, LockFacts
from fixdnn.target.host import Host, HostError

INSTALL_HINT = "conda-lock is not installed: pip install 'fixdnn[conda]'"
_SUBDIRS = {
    ("linux", "x86_64"): "linux-64", ("linux", "amd64"): "linux-64", ("linux", "aarch64"): "linux-aarch64",
    ("linux", "arm64"): "linux-aarch64", ("linux", "ppc64le"): "linux-ppc64le", ("linux", "s390x"): "linux-s390x",
    ("linux", "i686"): "linux-32", ("darwin", "x86_64"): "osx-64", ("darwin", "arm64"): "osx-arm64",
    ("win32", "amd64"): "win-64", ("win32", "x86_64"): "win-64", ("win32", "arm64"): "win-arm64",
}
_SUBDIR_NAMES = set(_SUBDIRS.values()) | {"noarch"}


class LockfileError(ValueError):
    """A lockfile that cannot be written or read: one line, naming the file."""


class CondaLockMissing(LockfileError):
    def __init__(self):
        super().__init__(INSTALL_HINT)


def _require_conda_lock():
    try:
        import conda_lock.lockfile  # noqa: F401
        from conda_lock.lockfile.v2prelim import models  # noqa: F401
    except ImportError:
        raise CondaLockMissing() from None


def available() -> bool:
    try:
        _require_conda_lock()
        return True
    except CondaLockMissing:
        return False


def conda_subdir(platform: str | None, machine: str | None) -> str | None:
    """conda's name for a platform: ("linux", "x86_64") -> "linux-64"; None when unknown."""
    if not platform or not machine:
        return None
    plat = "linux" if platform.startswith("linux") else platform.lower()
    return _SUBDIRS.get((plat, machine.lower()))


# -- what is installed ---------------------------------------------------------------------------------
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
    while len(parts) > 1 and parts[-1] in _SUBDIR_NAMES:
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
    from fixdnn.facts.conda import conda_prefix

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


def _direct_url(host: Host, metadata_dir: str) -> tuple[str | None, str | None]:
    """(url, sha256) from PEP 610 ``direct_url.json``; (None, None) when pip recorded none."""
    try:
        data = json.loads(host.read_text(f"{metadata_dir}/direct_url.json", limit=1 << 20))
    except (HostError, ValueError):
        return None, None
    if not isinstance(data, dict) or not isinstance(data.get("url"), str) or not data["url"]:
        return None, None
    url = data["url"]
    vcs = data.get("vcs_info")
    if isinstance(vcs, dict) and isinstance(vcs.get("vcs"), str):
        commit = vcs.get("commit_id")
        return f"{vcs['vcs']}+{url}" + (f"@{commit}" if isinstance(commit, str) and commit else ""), None
    sha = None
    archive = data.get("archive_info")
    if isinstance(archive, dict):
        hashes = archive.get("hashes")
        if isinstance(hashes, dict) and isinstance(hashes.get("sha256"), str):
            sha = hashes["sha256"]
        elif isinstance(archive.get("hash"), str) and archive["hash"].startswith("sha256="):
            sha = archive["hash"][len("sha256="):]
    return url, sha


def _pip_depends(requires: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    from packaging.requirements import InvalidRequirement, Requirement

    from packaging.utils import canonicalize_name

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
        url, sha = _direct_url(host, dist.metadata_dir)
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
    _require_conda_lock()
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
                                f"{_first_error(exc)}") from None
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


# -- reading -------------------------------------------------------------------------------------------
def _first_error(exc) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            loc = ".".join(str(p) for p in first.get("loc", ()))
            return f"{loc}: {first.get('msg', '')}".strip(": ") if loc else str(first.get("msg", exc))
        except Exception:  # pragma: no cover - defensive
            pass
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__


def parse(path: str | Path):
    """conda-lock's own reader, with every failure turned into one :class:`LockfileError` line."""
    _require_conda_lock()
    import yaml
    from conda_lock.lockfile import MissingLockfileVersion, UnknownLockfileVersion, parse_conda_lock_file

    p = Path(path)
    if not p.is_file():
        raise LockfileError(f"{path}: no such lockfile" if not p.exists() else f"{path}: not a file")
    try:
        head = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise LockfileError(f"{path}: not a conda-lock lockfile (not UTF-8 text)") from None
    except OSError as exc:
        raise LockfileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LockfileError(f"{path}: not a conda-lock lockfile (invalid YAML{where}: {problem})") from None
    if not isinstance(head, dict):
        raise LockfileError(f"{path}: not a conda-lock lockfile (expected a mapping with version, metadata, package)")
    try:
        return parse_conda_lock_file(p)
    except MissingLockfileVersion:
        raise LockfileError(f"{path}: not a conda-lock lockfile (no 'version' key)") from None
    except UnknownLockfileVersion:
        raise LockfileError(f"{path}: unsupported lockfile version {head.get('version')!r} "
                            "(conda-lock reads versions 1 and 2)") from None
    except ValueError as exc:  # pydantic ValidationError
        raise LockfileError(f"{path}: invalid lockfile: {_first_error(exc)}") from None
    except Exception as exc:  # conda-lock's own bugs on odd input: still one line
        raise LockfileError(f"{path}: cannot read lockfile ({exc.__class__.__name__}: {exc})") from None


def read(path: str | Path, platform: str | None = None) -> LockFacts:
    """The lockfile's packages for ``platform`` (the target's conda subdir) as plain values."""
    from packaging.utils import canonicalize_name
    from fixdnn.facts.integrity import load_patterns

    lockfile = parse(path)
    platforms = sorted(set(lockfile.metadata.platforms) | {d.platform for d in lockfile.package})
    if platform is None:
        if len(platforms) != 1:
            raise LockfileError(f"{path}: locks {', '.join(platforms) or 'no platform'}; cannot tell which is "
                                "the target's")
        platform = platforms[0]
    elif platform not in platforms:
        raise LockfileError(f"{path}: locks {', '.join(platforms) or 'no platform'}, not the target's {platform}")
    packages = []
    for d in lockfile.package:
        if d.platform != platform or (d.manager == "conda" and d.name.startswith("__")):
            continue
        packages.append(LockedPackage(
            name=canonicalize_name(d.name) if d.manager == "pip" else d.name, manager=d.manager, version=str(d.version),
            build=d.build or None, url=d.url, md5=d.hash.md5, sha256=d.hash.sha256,
            optional="main" not in d.categories))
    patterns = load_patterns()
    return LockFacts(str(path), platform, tuple(sorted(packages, key=lambda p: (p.manager, p.name))),
                     patterns.pip, patterns.conda)


# -- drift ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Drift:
    name: str
    manager: str  # conda | pip
    change: str  # changed | missing | extra
    locked_version: str | None
    installed_version: str | None
    locked_build: str | None = None
    installed_build: str | None = None


def _version_equal(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        from packaging.version import Version

        return Version(a) == Version(b)
    except Exception:
        return False


def drift(facts: Facts, *, relevant_only: bool = True) -> list[Drift]:
    """Packages whose installed state differs from ``facts.lock`` (pure). Only DNN-relevant names by default
    (``facts.lock.pip_patterns`` / ``conda_patterns``); a conda build string counts as part of the version."""
    lock = facts.lock
    if lock is None:
        return []
    from fixdnn.facts.integrity import relevant

    def wanted(name: str, manager: str) -> bool:
        if not relevant_only:
            return True
        return relevant(name, lock.pip_patterns if manager == "pip" else lock.conda_patterns)

    installed: dict[tuple[str, str], tuple[str, str | None]] = {}
    for dist in facts.distributions:
        if (dist.installer or "").strip().lower() != "conda":
            installed[("pip", dist.name)] = (dist.version, None)
    for pkg in facts.conda_packages:
        installed[("conda", pkg.name)] = (pkg.version, pkg.build or None)
    locked = {(p.manager, p.name): p for p in lock.packages}
    out: list[Drift] = []
    for (manager, name), p in sorted(locked.items()):
        if not wanted(name, manager):
            continue
        have = installed.get((manager, name))
        if have is None:
            if not p.optional:
                out.append(Drift(name, manager, "missing", p.version, None, p.build, None))
            continue
        version, build = have
        if not _version_equal(version, p.version) or (manager == "conda" and p.build and build and p.build != build):
            out.append(Drift(name, manager, "changed", p.version, version, p.build, build))
    for (manager, name), (version, build) in sorted(installed.items()):
        if (manager, name) not in locked and wanted(name, manager):
            out.append(Drift(name, manager, "extra", None, version, None, build))
    return out


__all__ = ["CondaLockMissing", "Drift", "INSTALL_HINT", "LockfileError", "available", "collect", "conda_subdir",
           "drift", "parse", "read", "write"]
