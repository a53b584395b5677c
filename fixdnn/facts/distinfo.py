"""The one reader of installed-distribution metadata: ``*.dist-info`` and ``*.egg-info`` folders.

- METADATA (PKG-INFO for egg-info): only the header block is read and split by lines (folded lines
  joined); the long description after the first blank line can be megabytes and is never parsed.
- ``direct_url.json`` (PEP 610): where pip got the distribution from, when it recorded it.
- RECORD (egg-info: ``installed-files.txt``): read only when a caller needs the file list, never with a
  buffer larger than the file, and split with ``str.rsplit`` except for the rare quoted line.

Names are compared in their canonical form (``packaging.utils.canonicalize_name``, PEP 503).
Everything reads through a :class:`~fixdnn.target.host.Host`; errors are :class:`HostError` or
:class:`DistInfoError`, each one line.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

from packaging.utils import canonicalize_name

from fixdnn.target.host import Host, HostError

HEADER_LIMIT = 256 << 10
RECORD_LIMIT = 64 << 20
SUFFIXES = (".dist-info", ".egg-info")


class DistInfoError(ValueError):
    """A metadata folder whose files are there but say nothing usable (one line, no path)."""


@dataclass(frozen=True)
class Metadata:
    name: str  # as written (display name)
    version: str
    requires: tuple[str, ...]

    @property
    def canonical(self) -> str:
        return canonicalize_name(self.name)


def is_metadata_dir(name: str) -> bool:
    return name.endswith(SUFFIXES)


def parse_headers(text: str) -> dict[str, list[str]]:
    """{lower-case field: [values]} of an RFC 822 style header block (stops at the first blank line).

    A line split: the stdlib's ``email`` parser costs ~15x more and every distribution pays it."""
    out: dict[str, list[str]] = {}
    last: list[str] | None = None
    end = text.find("\n\n")  # the body (a long description) is never split into lines
    for line in (text if end < 0 else text[:end]).split("\n"):
        line = line.rstrip("\r")
        if not line:
            break
        if line[0] in " \t":  # a folded continuation of the previous field
            if last:
                last[-1] = f"{last[-1]} {line.strip()}"
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        last = out.setdefault(key.strip().lower(), [])
        last.append(value.strip())
    return out


def metadata_name(folder: str) -> str:
    return "METADATA" if folder.endswith(".dist-info") else "PKG-INFO"


def read_metadata(host: Host, meta_dir: str) -> Metadata:
    """Name, version and Requires-Dist of one metadata folder; HostError / DistInfoError when unusable."""
    meta_name = metadata_name(meta_dir.rstrip("/"))
    text = host.read_text(f"{meta_dir}/{meta_name}", limit=HEADER_LIMIT)
    headers = parse_headers(text)
    name, version = (headers.get("name") or [""])[0], (headers.get("version") or [""])[0]
    if not name or not version:
        raise DistInfoError(f"{meta_name} has no Name or Version")
    return Metadata(name, version, tuple(headers.get("requires-dist", ())))


def record_file(meta_dir: str, files) -> str | None:
    """The file list of a metadata folder given its entry names: RECORD, or egg-info's installed-files.txt."""
    if "RECORD" in files:
        return f"{meta_dir}/RECORD"
    if "installed-files.txt" in files:
        return f"{meta_dir}/installed-files.txt"
    return None


def is_record(path: str | None) -> bool:
    """A PEP 376 RECORD (hashes and sizes), not egg-info's bare installed-files.txt."""
    return bool(path) and path.endswith("/RECORD")


def read_record(host: Host, path: str, limit: int = RECORD_LIMIT) -> str:
    """The text of a RECORD (undecodable bytes kept as surrogates). HostError; DistInfoError when over limit."""
    raw = host.read_bytes(path, limit=limit + 1)
    if len(raw) > limit:
        raise DistInfoError(f"larger than {limit >> 20} MiB, not read")
    return raw.decode("utf-8", errors="surrogateescape")


def wheel_record(whl: str, limit: int = RECORD_LIMIT) -> str:
    """The RECORD inside a wheel file (what installing it will write), read from the zip's directory
    without unpacking anything else. OSError / DistInfoError when the wheel has none or is not a zip."""
    import zipfile

    try:
        with zipfile.ZipFile(whl) as zf:
            name = next((i for i in zf.infolist() if i.filename.count("/") == 1
                         and i.filename.endswith(".dist-info/RECORD")), None)
            if name is None:
                raise DistInfoError(f"{whl}: no .dist-info/RECORD")
            if name.file_size > limit:
                raise DistInfoError(f"{whl}: RECORD larger than {limit >> 20} MiB")
            return zf.read(name).decode("utf-8", errors="surrogateescape")
    except zipfile.BadZipFile as exc:
        raise DistInfoError(f"{whl}: not a wheel ({exc})") from None


def record_rows(text: str) -> Iterator[tuple[int, list[str] | None, str]]:
    """(line number, [path, hash, size] or None, error) for every non-blank RECORD line."""
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if '"' in line:  # quoted fields (commas in file names): the csv module; otherwise a cheap split
            try:
                row = next(csv.reader([line]))
            except (csv.Error, StopIteration) as exc:
                yield number, None, str(exc) or "unreadable"
                continue
        else:
            row = line.rsplit(",", 2) if line.count(",") >= 2 else line.split(",")
        if len(row) != 3 or not row[0]:
            yield number, None, f"expected 3 fields (path,hash,size), got {len(row)}"
            continue
        yield number, row, ""


def listed_paths(record: str, text: str) -> list[str]:
    """Normalised target paths listed by ``record``: a RECORD (paths relative to the site dir) or an
    egg-info installed-files.txt (relative to the egg-info folder). Malformed lines are skipped."""
    meta_dir = os.path.dirname(record)
    if record.endswith("/installed-files.txt"):
        return [os.path.normpath(os.path.join(meta_dir, ln.strip())) for ln in text.splitlines() if ln.strip()]
    site = os.path.dirname(meta_dir)
    return [os.path.normpath(os.path.join(site, row[0])) for _n, row, _e in record_rows(text) if row]


def direct_url(host: Host, metadata_dir: str) -> tuple[str | None, str | None]:
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


@dataclass(frozen=True)
class Found:
    location: str  # the sys.path entry
    folder: str  # the metadata folder's name
    files: frozenset[str]

    @property
    def path(self) -> str:
        return f"{self.location.rstrip('/')}/{self.folder}"


def scan(host: Host, location: str) -> Iterator[Found | tuple[str, str]]:
    """The metadata folders of one sys.path entry (sorted), or (path, reason) for a folder that cannot be
    listed. A missing location yields nothing; an unreadable one raises HostError."""
    for folder in host.listdir(location):
        if not is_metadata_dir(folder):
            continue
        path = f"{location.rstrip('/')}/{folder}"
        try:
            files = frozenset(host.listdir(path))
        except HostError as exc:
            yield path, exc.reason
            continue
        yield Found(location, folder, files)


__all__ = ["DistInfoError", "Found", "HEADER_LIMIT", "Metadata", "RECORD_LIMIT", "canonicalize_name", "direct_url", "is_metadata_dir", "is_record",
           "listed_paths", "metadata_name", "parse_headers", "read_metadata", "read_record", "record_file",
           "record_rows", "scan"]
