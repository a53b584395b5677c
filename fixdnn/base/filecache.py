"""Answers about files, kept on disk while the files are unchanged: one cache for every per-file probe.

A probe that reads a file (its symbol versions, its fat binaries, the version its binary reports) stores
its answer under a key with the *identity* of the files it read. The identity is what changes when the
content can change: device, inode, size and modification time (nanoseconds). It leaves out the change
time, which a hard link, ``cp -al``, ``chmod`` or ``chown`` moves without touching a byte: those keep
their answers. A writer that restores the old modification time with the same size (``touch -d``) is not
seen; ``--verify-all`` re-reads everything.

Entries live in one JSON file per cache in the environment's state folder; a missing, damaged or
foreign file is an empty cache, and a cache that cannot be written only costs time next run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fixdnn.base.serial import from_json, to_json

T = TypeVar("T")

_MEMO: dict[tuple[str, str], tuple[list, Any]] = {}  # (cache file, key) -> (identity, answer), per process


def identity(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


class FileCache:
    def __init__(self, path: Path | None, schema: str):
        self.path, self.schema = path, schema
        self.entries: dict[str, list] = {}
        self.dirty = False
        if path is None:
            return
        try:
            with open(path, "rb") as fh:
                data = json.load(fh)
        except (OSError, ValueError, RecursionError):
            return
        if isinstance(data, dict) and data.get("schema") == schema and isinstance(data.get("entries"), dict):
            self.entries = data["entries"]

    def _memo_key(self, key: str) -> tuple[str, str]:
        return (f"{self.path}\0{self.schema}", key)

    def get(self, key: str, ident: list) -> Any | None:
        """The stored answer for ``key`` when it was made from files of this identity, else None."""
        memo = _MEMO.get(self._memo_key(key))
        if memo is not None and memo[0] == ident:
            self.put(key, ident, memo[1])  # learnt earlier in this process, maybe by a run that saved nothing
            return memo[1]
        hit = self.entries.get(key)
        if isinstance(hit, list) and len(hit) == 2 and hit[0] == ident:
            _MEMO[self._memo_key(key)] = (ident, hit[1])
            return hit[1]
        return None

    def put(self, key: str, ident: list, answer: Any) -> None:
        """Keep ``answer`` (JSON-able) for files of identity ``ident``."""
        _MEMO[self._memo_key(key)] = (ident, answer)
        if self.entries.get(key) != [ident, answer]:
            self.entries[key] = [ident, answer]
            self.dirty = True

    def remember(self, key: str, idents: Callable[[], list | None], compute: Callable[[], T], kind: Any,
                 keep: Callable[[T], bool] = lambda _answer: True) -> T:
        """``compute()``, or its answer from an earlier run while ``idents()`` (the identity of the files it
        reads, None when they cannot be read) is unchanged. An answer is kept only when ``keep(answer)`` and
        the files did not change while it was computed. ``kind``: the answer's type, to rebuild it."""
        before = idents()
        if before is None:
            return compute()
        hit = self.get(key, before)
        if hit is not None:
            try:
                return from_json(kind, hit)
            except (ValueError, TypeError):
                pass  # a damaged entry is a miss
        found = compute()
        if keep(found) and idents() == before:
            self.put(key, before, to_json(found))
        return found

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        from fixdnn.base.atomic import write_atomic

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self.path, json.dumps({"schema": self.schema, "entries": self.entries},
                                               separators=(",", ":")).encode("utf-8", "surrogateescape"))
            self.dirty = False
        except OSError:
            pass  # only costs time next run
