"""Installed packages verified file by file against their own records (symptom install-corrupted).

pip records every installed file in ``<dist-info>/RECORD`` (path, ``sha256=<urlsafe-b64>``, size); conda
in ``conda-meta/<name>-<version>-<build>.json`` (``paths_data.paths[]``: ``_path``, ``sha256``,
``size_in_bytes``). A file that is missing, has another size or another hash was damaged after install: an
interrupted download or copy, a full disk, a hand edit, or a "fix" that symlinked one library onto another.

Which packages are checked is data (``rules/compat/integrity.toml``); ``verify_all`` checks every one.

Speed: sizes are compared first, for every file (a truncated or replaced file is found at the cost of a
stat). Hashing is where the time goes (gigabytes in a CUDA environment), so a diagnosis hashes only the
files that need it: with ``hash_only`` (the libraries that would load, given by the caller) the others are
compared by size and reported as such (``InstallCheck.size_only``) until ``--verify-all`` hashes them all.
Hashes run in a thread pool (hashlib releases the GIL on large buffers) in 1 MiB chunks, largest first.

The cache: digests are kept in fixdnn's state directory per environment, keyed by the file's identity
(device, inode, size, mtime_ns: :func:`fixdnn.base.filecache.identity`). That key changes whenever the
content can have changed through an ordinary write, and not when only metadata did: a hard link,
``cp -al``, ``chmod`` or ``chown`` move the change time, not these, so they keep the cached digests. What it
trusts: that nobody rewrites a file in place with the same size and then sets its modification time back
(``touch -d``, ``rsync --times`` onto the same inode). ``--verify-all`` trusts no cache and hashes every file.
All reads go through :class:`~fixdnn.target.host.Host`.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import io
import json
import os
import re
import stat as stat_mod
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from packaging.utils import canonicalize_name

from fixdnn.base.filecache import identity
from fixdnn.facts import condameta, distinfo
from fixdnn.model.facts import BadFile, Distribution, InstallCheck, TargetInfo, Unknown
from fixdnn.target.host import Host, HostError

CHUNK = 1 << 20
BAD_CAP = 100  # bad files kept per package in the facts (bad_count has the full number)
CACHE_NAME = "integrity-cache.json"
CACHE_SCHEMA = "fixdnn.integrity-cache/2"  # /2: identity keys without ctime
# Digests weaker than sha256 prove nothing against a hand edit; PEP 376 RECORDs never use them in practice.
_ALGORITHMS = {"sha224", "sha256", "sha384", "sha512", "sha3_256", "sha3_384", "sha3_512", "blake2b", "blake2s"}
_SITE_TAIL = re.compile(r"/lib(?:64)?/(?:python[^/]+|pypy[^/]*)/(?:site|dist)-packages$")

# Instrumentation: the number of files actually read and hashed since import (tests compare it, no timing).
HASH_CALLS = 0
_counter_lock = threading.Lock()


# -- which packages ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Patterns:
    pip: tuple[str, ...]
    conda: tuple[str, ...]


@lru_cache(maxsize=4)
def load_patterns(path: str | None = None) -> Patterns:
    """The package-name globs of ``rules/compat/integrity.toml``; RulesError (file:line) when malformed."""
    from fixdnn.knowledge.compat import RulesError, line_of, load_toml, rules_dir

    file = Path(path) if path else rules_dir() / "compat" / "integrity.toml"
    data, text = load_toml(file)
    out = {}
    for section in ("pip", "conda"):
        table = data.get(section)
        if not isinstance(table, dict):
            raise RulesError(f"{file}:{line_of(text, section)}: missing table [{section}]")
        pats = table.get("patterns")
        if not isinstance(pats, list) or not all(isinstance(p, str) and p for p in pats):
            raise RulesError(f"{file}:{line_of(text, 'patterns')}: [{section}] patterns must be a list of names/globs")
        out[section] = tuple(p.lower() for p in pats)
    return Patterns(**out)


@lru_cache(maxsize=16)
def _matcher(patterns: tuple[str, ...]):
    # one compiled alternation instead of a fnmatch call per pattern and distribution
    return re.compile("|".join(fnmatch.translate(p) for p in patterns) or "(?!)").match


def relevant(name: str, patterns: tuple[str, ...]) -> bool:
    return _matcher(patterns)(canonicalize_name(name)) is not None


# -- what is expected ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    recorded: str  # as written in the record
    path: str  # absolute target path
    algorithm: str | None  # None: no hash to compare
    digest: bytes | None
    size: int | None
    style: str  # "record" (urlsafe b64, algo=) | "hex"


@dataclass
class Package:
    name: str
    version: str
    source: str
    record: str
    entries: list[Entry] = field(default_factory=list)
    skipped: int = 0
    record_key: list[int] | None = None  # stat key of RECORD when read; set only when it parsed cleanly


def _inside(path: str, bases: tuple[str, ...]) -> bool:
    return any(path == b or path.startswith(b.rstrip("/") + "/") for b in bases)


def _bases(location: str, target: TargetInfo) -> tuple[str, ...]:
    """Where a distribution's files may legitimately live: its site dir, the scheme root above it
    (``<base>/lib/pythonX.Y/site-packages`` -> ``<base>``: intel-openmp puts ``../../../lib/libiomp5.so``
    there), and the target prefix."""
    loc = os.path.normpath(location)
    bases = [loc]
    m = _SITE_TAIL.search(loc)
    if m:
        bases.append(loc[: m.start()] or "/")
    for p in (target.prefix, target.base_prefix if target.kind != "venv" else None):
        if p:
            bases.append(os.path.normpath(p))
    return tuple(dict.fromkeys(bases))


_URLSAFE = bytes.maketrans(b"-_", b"+/")


def _b64(digest: str) -> bytes:
    # binascii on bytes directly: base64.urlsafe_b64decode's wrappers (and str.translate) cost more than
    # the decode itself, once per RECORD line
    return binascii.a2b_base64((digest + "=" * (-len(digest) % 4)).encode("ascii").translate(_URLSAFE))


def parse_record(text: str, location: str, bases: tuple[str, ...]) -> tuple[list[Entry], int, list[str], list[str]]:
    """(entries, skipped, malformed line notes, refused paths) of a RECORD; never raises."""
    entries: list[Entry] = []
    skipped = 0
    malformed: list[str] = []
    refused: list[str] = []
    digest_sizes: dict[str, int] = {}
    location = os.path.normpath(location)
    for number, row, error in distinfo.record_rows(text):
        if row is None:
            malformed.append(f"line {number}: {error}")
            continue
        rel, hash_field, size_field = row
        if not hash_field:
            skipped += 1  # RECORD itself, .pyc compiled at install, INSTALLER written later
            continue
        algo, sep, value = hash_field.partition("=")
        algo = algo.strip().lower()
        if not sep or not value:
            malformed.append(f"line {number}: hash {hash_field!r} is not ALGORITHM=DIGEST")
            continue
        if algo not in _ALGORITHMS:
            malformed.append(f"line {number}: unsupported hash algorithm {algo!r}")
            continue
        try:
            digest = _b64(value.strip())
        except (binascii.Error, ValueError):
            malformed.append(f"line {number}: digest {value!r} is not urlsafe base64")
            continue
        if algo not in digest_sizes:
            digest_sizes[algo] = hashlib.new(algo).digest_size
        if len(digest) != digest_sizes[algo]:
            malformed.append(f"line {number}: digest has {len(digest)} bytes, {algo} has {digest_sizes[algo]}")
            continue
        size: int | None = None
        if size_field.strip():
            try:
                size = int(size_field)
                if size < 0:
                    raise ValueError
            except ValueError:
                malformed.append(f"line {number}: size {size_field!r} is not a number")
                continue
        if rel.startswith("/") or "/." in rel or rel.startswith(".") or "//" in rel:
            full = os.path.normpath(rel if rel.startswith("/") else f"{location}/{rel}")
        else:
            full = f"{location}/{rel}"  # already normal: skip normpath on the common path
        if not _inside(full, bases):
            refused.append(rel)
            skipped += 1
            continue
        entries.append(Entry(rel, full, algo, digest, size, "record"))
    return entries, skipped, malformed, refused


def _snapshot_holds(host: Host, snap, record_key: list[int], hash_only: frozenset[str] | None) -> bool:
    """True when a package verified clean before is provably unchanged: the same RECORD and every file
    with the same identity (device, inode, size, mtime) as then. Nothing is parsed or hashed for it."""
    try:
        if snap["record"] != record_key:
            return False
        if snap["size_only"] and (hash_only is None or any(p in hash_only or link in hash_only
                                                             for p, link in snap["size_only"])):
            return False  # a file it only compared by size must now be hashed
        for path, *key in snap["files"]:
            st = host.lstat(path)
            if stat_mod.S_ISLNK(st.st_mode):
                st = host.stat(path)
            if _key(st) != key:
                return False
        return True
    except (HostError, TypeError, KeyError, ValueError):
        return False


def _pip_packages(host: Host, target: TargetInfo, dists, patterns: Patterns | None, unknowns: list[Unknown],
                  snapshots: dict | None = None, unchanged: list | None = None,
                  hash_only: frozenset[str] | None = None) -> list[Package]:
    """Packages to verify; those a clean snapshot proves unchanged go to ``unchanged`` as results."""
    out = []
    snapshots = snapshots if snapshots is not None else {}
    for dist in dists:
        if patterns is not None and not relevant(dist.name, patterns.pip):
            continue
        if not distinfo.is_record(dist.record):
            continue  # egg-info installed-files.txt has no hashes
        if (dist.installer or "").strip().lower() == "conda":
            continue  # conda rewrote some files at link time; conda-meta is the record that holds
        label = f"RECORD of {dist.display_name} {dist.version}"
        try:
            record_key = _key(host.stat(dist.record))
        except HostError:
            record_key = None
        snap = snapshots.get(dist.record)
        if record_key is not None and unchanged is not None and snap and _snapshot_holds(host, snap, record_key,
                                                                                          hash_only):
            unchanged.append(InstallCheck(dist.name, dist.version, "pip", dist.record, snap["checked"],
                                          snap["skipped"], size_only=len(snap["size_only"])))
            continue
        try:
            text = distinfo.read_record(host, dist.record)
        except HostError as exc:
            unknowns.append(Unknown(label, f"{dist.record}: {exc.reason}"))
            continue
        except distinfo.DistInfoError as exc:
            unknowns.append(Unknown(label, f"{dist.record}: {exc}"))
            continue
        entries, skipped, malformed, refused = parse_record(text, dist.location, _bases(dist.location, target))
        if malformed:
            unknowns.append(Unknown(label, f"{dist.record}: malformed ({len(malformed)} line(s) not checked; "
                                           f"first: {malformed[0]})"))
        if refused:
            unknowns.append(Unknown(label, f"{dist.record}: {len(refused)} path(s) outside the environment "
                                           f"not checked (first: {refused[0]!r})"))
        clean_parse = not malformed and not refused
        out.append(Package(dist.name, dist.version, "pip", dist.record, entries, skipped,
                           record_key if clean_parse else None))
    return out


def _conda_packages(host: Host, target: TargetInfo, patterns: Patterns | None, unknowns: list[Unknown]) -> list[Package]:
    prefix = target.prefix
    if not prefix:
        return []
    prefix = os.path.normpath(prefix)
    wanted = None if patterns is None else (lambda name: relevant(name, patterns.conda))
    out = []
    try:
        found = list(condameta.records(host, prefix, wanted or (lambda name: True)))
    except HostError:
        return []
    for record in found:
        if isinstance(record, condameta.RecordError):
            unknowns.append(Unknown(f"conda record {record.path.rsplit('/', 1)[-1]}", str(record)))
            continue
        path, label = record.path, f"conda record {record.fname}"
        paths = record.paths
        if paths is None:
            continue  # old conda: no per-file hashes recorded, nothing to compare
        pkg = Package(record.name, record.version, "conda", path)
        malformed = 0
        for item in paths:
            if not isinstance(item, dict) or not isinstance(item.get("_path"), str):
                malformed += 1
                continue
            if item.get("path_type", "hardlink") not in ("hardlink", None):
                pkg.skipped += 1  # softlink / directory: nothing to hash
                continue
            rel = item["_path"]
            digest_hex = item.get("sha256_in_prefix")
            placeholder = "prefix_placeholder" in item
            if digest_hex is None and not placeholder:
                digest_hex = item.get("sha256")
            size = item.get("size_in_bytes") if not placeholder else None
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                size = None
            digest = None
            if isinstance(digest_hex, str):
                try:
                    digest = bytes.fromhex(digest_hex)
                except ValueError:
                    digest = None
                if digest is not None and len(digest) != 32:
                    digest = None
                if digest is None:
                    malformed += 1
                    continue
            if digest is None and size is None:
                pkg.skipped += 1  # rewritten at link time (prefix placeholder) or no data: nothing to compare
                continue
            full = os.path.normpath(f"{prefix}/{rel}")
            if not _inside(full, (prefix,)):
                pkg.skipped += 1
                continue
            pkg.entries.append(Entry(rel, full, "sha256" if digest else None, digest, size, "hex"))
        if malformed:
            unknowns.append(Unknown(label, f"{path}: {malformed} malformed paths_data entr(y/ies) not checked"))
        out.append(pkg)
    return out


# -- the cache -----------------------------------------------------------------------------------------
def _key(st: os.stat_result) -> list[int]:
    return identity(st)


def load_cache(path: Path | None) -> dict[str, list]:
    """path -> [dev, ino, size, mtime_ns, {algorithm: hex}]; a missing or corrupt file is empty."""
    return _load_all(path)[0]


def _load_all(path: Path | None) -> tuple[dict[str, list], dict[str, dict]]:
    """(per-file digests, per-package clean snapshots); a missing or corrupt file gives empty ones."""
    if path is None:
        return {}, {}
    try:
        with open(path, "rb") as fh:
            data = json.load(fh)
    except (OSError, ValueError, RecursionError):
        return {}, {}
    if not isinstance(data, dict) or data.get("schema") != CACHE_SCHEMA or not isinstance(data.get("files"), dict):
        return {}, {}
    # Entries are checked where they are used (a wrong shape is a miss), not here: this file holds an
    # entry per installed file, and a full pass over it cost more than the rest of a warm check.
    clean = data.get("clean")
    return data["files"], clean if isinstance(clean, dict) else {}


def save_cache(path: Path, files: dict[str, list], clean: dict[str, dict] | None = None) -> None:
    from fixdnn.base.atomic import write_atomic

    def stream(fh) -> None:  # one entry per installed file: streamed, never built as one string
        text = io.TextIOWrapper(fh, encoding="utf-8", errors="surrogateescape", write_through=True)
        json.dump({"schema": CACHE_SCHEMA, "files": files, "clean": clean or {}}, text, separators=(",", ":"),
                  ensure_ascii=False)
        text.flush()
        text.detach()

    write_atomic(path, stream)


def _cache_path(host: Host, target: TargetInfo, create: bool) -> Path | None:
    from fixdnn.base.state import target_file

    return target_file(host, target, CACHE_NAME, create)


# -- hashing -------------------------------------------------------------------------------------------
_buffers = threading.local()
NOTICE_BYTES = 256 << 20  # hashing less than this is quick enough to need no word


def hash_file(host: Host, path: str, algorithm: str) -> tuple[bytes, os.stat_result, bool]:
    """(digest, stat before reading, unchanged while reading). Streams 1 MiB at a time; raises HostError."""
    global HASH_CALLS
    with _counter_lock:
        HASH_CALLS += 1
    h = hashlib.new(algorithm)
    buf = getattr(_buffers, "buf", None)
    if buf is None:  # one buffer per worker thread: a fresh 1 MiB per file made glibc's arenas grow by ~50 MB
        buf = _buffers.buf = bytearray(CHUNK)
    view = memoryview(buf)
    with host.open_binary(path) as fh:
        try:
            before = os.fstat(fh.fileno())
            if not stat_mod.S_ISREG(before.st_mode):
                raise HostError(path, "not a regular file")
            try:
                os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except (AttributeError, OSError):
                pass
            while True:
                n = fh.readinto(buf)
                if not n:
                    break
                h.update(view[:n])
            after = os.fstat(fh.fileno())
        except OSError as exc:
            raise HostError(path, exc.strerror or exc.__class__.__name__) from None
    return h.digest(), before, _key(before) == _key(after)


def _hash_in_parallel(host: Host, order: list[tuple[str, str]]):
    """Yield ``((path, algorithm), hash_file result or HostError)`` in ``order``, hashed by a few threads.

    A fixed set of workers pulls from one shared iterator: a Future per file (tens of thousands in a CUDA
    environment) cost ~2 KiB each, more than all the hashing buffers together."""
    results: dict[tuple[str, str], object] = {}
    todo = iter(order)
    lock = threading.Lock()
    done = threading.Condition()

    def work() -> None:
        while True:
            with lock:
                k = next(todo, None)
            if k is None:
                return
            try:
                outcome: object = hash_file(host, k[0], k[1])
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which must not wait forever
                outcome = exc
            with done:
                results[k] = outcome
                done.notify_all()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(min(_workers(), len(order)))]
    for t in threads:
        t.start()
    for k in order:  # in order, so results are dropped as soon as they are used
        with done:
            while k not in results:
                done.wait()
            outcome = results.pop(k)
        if isinstance(outcome, BaseException) and not isinstance(outcome, HostError):
            raise outcome
        yield k, outcome
    for t in threads:
        t.join()


def _workers() -> int:
    return max(2, min(8, os.cpu_count() or 2))


def _fmt(style: str, algorithm: str, digest: bytes) -> str:
    if style == "record":
        return f"{algorithm}={base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"
    return f"{algorithm}:{digest.hex()}"


def _kind(mode: int) -> str:
    for test, name in ((stat_mod.S_ISDIR, "a directory"), (stat_mod.S_ISFIFO, "a FIFO"), (stat_mod.S_ISSOCK, "a socket"),
                       (stat_mod.S_ISCHR, "a character device"), (stat_mod.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _rewritten_shebang(host: Host, path: str) -> str | None:
    """The first line of a script in a ``bin/`` folder whose ``#!`` runs that folder's python: a relocated
    environment (venv-pack, conda-pack, a Dockerfile ``sed``) rewrites exactly that line of every console
    script, so such a script that differs from its record is relocated, not corrupted. None for anything
    else. (A script edited below a rewritten first line looks the same: the record's hash covers the whole
    file and the old first line is not kept anywhere.)"""
    if os.path.basename(os.path.dirname(path)) != "bin":
        return None
    try:
        with host.open_binary(path) as fh:
            head = fh.read(SHEBANG_LIMIT)
    except (HostError, OSError):
        return None
    if not head.startswith(b"#!") or b"\0" in head:
        return None
    line = head.split(b"\n", 1)[0].decode("utf-8", "replace")
    interpreter = line[2:].strip().split(" ", 1)[0]
    # Relocated *here*: the script now runs this bin/ folder's python (or finds one through env).
    here = os.path.dirname(path) + "/python"
    if interpreter.startswith(here) or interpreter == "/usr/bin/env" or line.startswith("#!/bin/sh"):
        return line
    return None


SHEBANG_LIMIT = 4096


SMALL_LIBRARY = 16 << 20  # shared objects below this are hashed on every first look: ~140 MiB in a torch venv


def _hash_now(path: str, link: str | None, size: int, hash_only: frozenset[str]) -> bool:
    """Hash on a default run: a library that would load, or any small shared object (cheap, and a damaged
    one breaks whoever loads it); big libraries nobody loads now and every other file wait for --verify-all."""
    if path in hash_only or link in hash_only:
        return True
    name = path.rsplit("/", 1)[-1]
    return size < SMALL_LIBRARY and (name.endswith(".so") or ".so." in name)


def verify(host: Host, packages: list[Package], cache_file: Path | None,
           save_to=None, loaded: tuple[dict, dict] | None = None,
           notice: Callable[[str], None] | None = None, hash_only: frozenset[str] | None = None,
           trust_cache: bool = True) -> tuple[InstallCheck, ...]:
    """Compare every entry with the disk. ``save_to()`` returns the cache path to write (or None);
    ``loaded`` is the cache already read by the caller (files, clean snapshots). ``hash_only``: hash only
    these paths (or files whose link resolves to one); the others without a cached digest are compared by
    size alone. ``trust_cache=False`` hashes every file again (``--verify-all``)."""
    cache, clean = loaded if loaded is not None else _load_all(cache_file)
    dirty = False
    size_only: set[str] = set()
    # path -> (stat, lstat-is-link target or None) or an error BadFile factory
    observed: dict[str, tuple] = {}
    wanted: dict[tuple[str, str], os.stat_result] = {}  # (path, algorithm) -> stat, to hash
    digests: dict[tuple[str, str], bytes] = {}

    def observe(path: str):
        if path in observed:
            return observed[path]
        link = None
        try:
            st = host.lstat(path)
            if stat_mod.S_ISLNK(st.st_mode):  # only links need the second stat (and a realpath)
                link = host.realpath(path)
                st = host.stat(path)
            result = ("ok", st, link)
        except HostError as exc:
            result = ("missing" if exc.reason == os.strerror(2) else "unreadable", exc.reason, link)
        observed[path] = result
        return result

    for pkg in packages:
        for e in pkg.entries:
            status, st, _link = observe(e.path)
            if status != "ok" or not stat_mod.S_ISREG(st.st_mode):
                continue
            if e.size is not None and st.st_size != e.size:
                continue
            if e.algorithm is None:
                continue
            hit = cache.get(e.path) if trust_cache else None
            try:
                if hit[:4] == _key(st):
                    digests[(e.path, e.algorithm)] = bytes.fromhex(hit[4][e.algorithm])
                    continue
            except (TypeError, KeyError, IndexError, ValueError, AttributeError):
                pass  # no entry, or one of the wrong shape: hash again
            if hash_only is not None and not _hash_now(e.path, _link, st.st_size, hash_only):
                size_only.add(e.path)  # its size matched; its hash waits for a run that needs it
                continue
            wanted[(e.path, e.algorithm)] = st

    failures: dict[tuple[str, str], str] = {}
    if wanted and notice is not None:
        size = sum(st.st_size for st in wanted.values())
        if size >= NOTICE_BYTES:  # a first run over CUDA wheels takes seconds: say why it is quiet
            notice(f"verifying {len(wanted)} files ({size / 2**30:.1f} GiB) of DNN packages against their "
                   "records; later runs reuse the result")
    if wanted:
        order = sorted(wanted, key=lambda k: -wanted[k].st_size)  # largest first: the pool ends together
        for k, outcome in _hash_in_parallel(host, order):
            if isinstance(outcome, HostError):
                failures[k] = outcome.reason
                continue
            digest, before, stable = outcome
            digests[k] = digest
            if stable:
                old = cache.get(k[0])
                algos = dict(old[4]) if old is not None and old[:4] == _key(before) else {}
                algos[k[1]] = digest.hex()
                cache[k[0]] = _key(before) + [algos]
                dirty = True

    results = []
    for pkg in packages:
        bad: list[BadFile] = []
        checked = unhashed = 0
        for e in pkg.entries:
            status, st, link = observed[e.path]
            checked += 1
            want_size = f"{e.size} bytes" if e.size is not None else None
            if status == "missing":
                bad.append(BadFile(e.recorded, "missing", want_size, None, link))
                if cache.pop(e.path, None) is not None:
                    dirty = True
                continue
            if status == "unreadable":
                bad.append(BadFile(e.recorded, "unreadable", want_size, st, link))
                continue
            if not stat_mod.S_ISREG(st.st_mode):
                bad.append(BadFile(e.recorded, "unreadable", want_size, _kind(st.st_mode), link))
                continue
            if e.size is not None and st.st_size != e.size:
                shebang = _rewritten_shebang(host, e.path)
                bad.append(BadFile(e.recorded, "shebang", want_size, shebang, link) if shebang else
                           BadFile(e.recorded, "size", want_size, f"{st.st_size} bytes", link))
                continue
            if e.algorithm is None:
                continue
            if e.path in size_only:
                unhashed += 1
                continue
            k = (e.path, e.algorithm)
            if k in failures:
                bad.append(BadFile(e.recorded, "unreadable", want_size, failures[k], link))
                continue
            got = digests[k]
            if got != e.digest:
                shebang = _rewritten_shebang(host, e.path)
                bad.append(BadFile(e.recorded, "shebang", want_size, shebang, link) if shebang else
                           BadFile(e.recorded, e.algorithm, _fmt(e.style, e.algorithm, e.digest),
                                   _fmt(e.style, e.algorithm, got), link))
        results.append(InstallCheck(pkg.name, pkg.version, pkg.source, pkg.record, checked, pkg.skipped,
                                    tuple(bad[:BAD_CAP]), len(bad), unhashed))
        snapshot = _snapshot(pkg, bad, observed, cache, checked, size_only)
        if snapshot is not None:
            clean[pkg.record] = snapshot
            dirty = True
        elif clean.pop(pkg.record, None) is not None:
            dirty = True
    if dirty and save_to is not None:
        target = save_to()
        if target is not None:
            try:
                save_cache(target, cache, clean)
            except OSError:
                pass  # a cache that cannot be written only costs time next run
    return tuple(results)


def _snapshot(pkg: Package, bad: list, observed: dict, cache: dict, checked: int, size_only: set[str]) -> dict | None:
    """A clean package's snapshot: only when every hashed file's digest is cached for its current stat
    (a file that changed while being hashed is not), so the next run can trust the stat keys alone. Files
    compared by size only are listed: a later run that must hash one of them does not use the snapshot."""
    if bad or pkg.record_key is None or pkg.source != "pip":
        return None
    files, unhashed = [], []
    for e in pkg.entries:
        _status, st, link = observed[e.path]
        key = _key(st)
        if e.path in size_only:
            unhashed.append([e.path, link])
        elif e.algorithm is not None:
            hit = cache.get(e.path)
            if not isinstance(hit, list) or hit[:4] != key:
                return None
        files.append([e.path, *key])
    return {"record": pkg.record_key, "checked": checked, "skipped": pkg.skipped, "files": files,
            "size_only": unhashed}


def gather(host: Host, target: TargetInfo, distributions: tuple[Distribution, ...], *, verify_all: bool = False,
           patterns: Patterns | None = None, save_cache: bool = True,
           notice: Callable[[str], None] | None = None,
           hash_only: frozenset[str] | None = None) -> tuple[tuple[InstallCheck, ...], list[Unknown]]:
    """Verify the DNN-relevant installed packages of the target: every file by size, and by hash those in
    ``hash_only`` (None: all) or already hashed before. ``verify_all``: every package and every file
    hashed again, no cache trusted.

    ``save_cache=False`` reads the hash cache but never writes it (``--dry-run`` changes nothing)."""
    unknowns: list[Unknown] = []
    pats = None if verify_all else (patterns or load_patterns())
    if verify_all:
        hash_only = None
    cache_file = _cache_path(host, target, create=False)
    files, clean = _load_all(cache_file)
    unchanged: list[InstallCheck] = []
    packages = _pip_packages(host, target, distributions, pats, unknowns, {} if verify_all else clean, unchanged,
                             hash_only)
    packages += _conda_packages(host, target, pats, unknowns)
    if not any(p.entries for p in packages):
        checked = verify(host, packages, None, loaded=({}, {}))
    else:
        checked = verify(host, packages, cache_file, loaded=(files, clean), notice=notice, hash_only=hash_only,
                         trust_cache=not verify_all,
                         save_to=(lambda: _cache_path(host, target, create=True)) if save_cache else None)
    order = {d.name: i for i, d in enumerate(distributions)}
    results = sorted(unchanged + list(checked), key=lambda c: (c.source != "pip", order.get(c.distribution, 0)))
    pending = [c for c in results if c.size_only]
    if pending:  # not proven intact: say so, a size match is not a verified hash
        unknowns.append(Unknown("sha256 of installed files", f"{sum(c.size_only for c in pending)} files of "
                                f"{len(pending)} package(s) were compared by size only (the libraries that would "
                                "load were hashed); fixdnn --verify-all hashes every file once"))
    return tuple(results), unknowns
