"""The one reader of conda's package records, ``<prefix>/conda-meta/<name>-<version>-<build>.json``.

A record is a JSON object: ``name``, ``version``, ``build``, ``channel``, ``url``, ``md5``, ``depends``,
``files`` (every path the package put in the prefix) and, in newer condas, ``paths_data.paths[]`` with
``_path``, ``path_type``, ``sha256``, ``size_in_bytes`` (and ``sha256_in_prefix`` where conda rewrote the
file at link time). Callers pick records by the name in the file name before anything is parsed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fixdnn.target.host import Host, HostError

LIMIT = 64 << 20


def meta_dir(prefix: str) -> str:
    return f"{prefix.rstrip('/')}/conda-meta"


def is_conda_prefix(host: Host, prefix: str | None) -> bool:
    return bool(prefix) and host.is_dir(meta_dir(prefix))


def split_filename(fname: str) -> tuple[str, str, str] | None:
    """('numpy', '1.26.4', 'py311_0') from 'numpy-1.26.4-py311_0.json'; None for any other name."""
    if not fname.endswith(".json"):
        return None
    parts = fname[:-5].rsplit("-", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and all(parts) else None


@dataclass(frozen=True)
class Record:
    path: str
    fname: str
    data: dict  # the parsed JSON object

    def text(self, key: str, fallback: str = "") -> str:
        """A string field, or ``fallback`` (the file name's part) when absent or not a non-empty string."""
        value = self.data.get(key)
        return value if isinstance(value, str) and value else fallback

    @property
    def name(self) -> str:
        guess = split_filename(self.fname)
        return self.text("name", guess[0] if guess else self.fname[:-5])

    @property
    def version(self) -> str:
        guess = split_filename(self.fname)
        return self.text("version", guess[1] if guess else "?")

    @property
    def build(self) -> str:
        guess = split_filename(self.fname)
        return self.text("build", guess[2] if guess else "")

    @property
    def files(self) -> list:
        files = self.data.get("files")
        return files if isinstance(files, list) else []

    @property
    def paths(self) -> list | None:
        """``paths_data.paths`` (per-file hashes), or None when this conda recorded none."""
        pd = self.data.get("paths_data")
        paths = pd.get("paths") if isinstance(pd, dict) else None
        return paths if isinstance(paths, list) else None


class RecordError(ValueError):
    """A record that cannot be read; ``reason`` is one line without the path."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def read(host: Host, path: str) -> Record:
    try:
        raw = host.read_bytes(path, limit=LIMIT + 1)
    except HostError as exc:
        raise RecordError(path, exc.reason) from None
    if len(raw) > LIMIT:
        raise RecordError(path, f"larger than {LIMIT >> 20} MiB")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise RecordError(path, f"not JSON ({str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    if not isinstance(data, dict):
        raise RecordError(path, "not a JSON object")
    return Record(path, path.rsplit("/", 1)[-1], data)


def records(host: Host, prefix: str, wanted: Callable[[str], bool] | None = None) -> Iterator[Record | RecordError]:
    """Every record of the prefix (sorted by file name) whose file-name package name ``wanted`` accepts;
    an unreadable one is yielded as its RecordError. Raises HostError when conda-meta cannot be listed."""
    folder = meta_dir(prefix)
    for fname in host.listdir(folder):
        if not fname.endswith(".json"):
            continue
        if wanted is not None:
            parts = split_filename(fname)
            if parts is None or not wanted(parts[0]):
                continue
        try:
            yield read(host, f"{folder}/{fname}")
        except RecordError as exc:
            yield exc


__all__ = ["LIMIT", "Record", "RecordError", "is_conda_prefix", "meta_dir", "read", "records", "split_filename"]
