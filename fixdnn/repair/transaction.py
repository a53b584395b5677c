"""Transactions: the only code that changes an environment, and the only code that undoes changes.

Model (certbot's reverter + pip's stash, at the level of a whole environment):

* **Journal and lock live in the environment**: ``<prefix>/.fixdnn/`` (like ``conda-meta/history`` or
  dpkg's own database), so every user, every ``HOME`` and ``sudo`` see the same transactions and the
  same lock. The folder takes the permission bits of the prefix itself: a group-writable shared env
  gets a group-writable journal. A user who cannot write the environment gets one clear line before
  anything changes. The user's state folder only remembers which environments it touched (so a plain
  ``fixdnn`` can mention an interrupted transaction anywhere).
* **One lock per environment**: ``fcntl.flock`` on ``<prefix>/.fixdnn/lock`` with the holder's pid written
  inside. The kernel drops the lock when its holder dies, so a crashed fixdnn never blocks the next run;
  the pid only tells a second fixdnn who holds it.
* **Write-ahead journal**: one folder per transaction, ``<prefix>/.fixdnn/txn/<id>/``, holding
  ``journal.jsonl`` (one JSON record a line, each appended and fsync'd, folder fsync'd on creation),
  the files a step needs for its undo, and ``OPEN`` while the transaction is not finished. Before a step
  changes anything, *what will change and how to undo it* is on disk; then the step runs; then it is
  marked done. Ids are UTC timestamps (sortable) plus the pid and a random suffix (unique).
* **Stash by rename**: files a pip step would replace or remove (the old distributions' RECORD and
  dist-info, and every existing path the new wheels will write, whoever owns it) are renamed into
  ``<id>/stash/``: the same filesystem as the environment, so a rename. Rollback renames them back:
  exact bytes, modes and symlinks, no network, no cache, no copy.
* **Copies for small files**: activation scripts and written files are copied before they change;
  files that did not exist are recorded so rollback removes them.
* **Idempotent undo**: every undo step looks at the disk and only moves what is still to be moved, so a
  rollback that itself crashes is simply run again.

Test-only hooks (read from the environment; never set them outside the test suite):

* ``FIXDNN_TEST_CRASH_AT=<step>:<phase>`` - SIGKILL this process at a step boundary. Phases: ``begin``
  (step ``0`` only), ``intent`` (undo recorded, nothing changed), ``stash`` (files stashed, pip not
  started), ``done``, ``end`` (step ``0``: everything done, not yet finalised); ``<step>:pip:<seconds>``
  kills it that long after the pip child started; ``undo:<step>`` during rollback after undoing a step.
* ``FIXDNN_TEST_FAIL_WRITE=<step>`` - the step fails with ENOSPC before it writes anything.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import shutil
import signal
import stat
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from fixdnn.base import state
from fixdnn.base.atomic import fsync_dir, write_atomic

STATE_IN_PREFIX = ".fixdnn"  # the environment's own journal and lock
TERMINAL = ("applied", "rolled-back", "failed-and-rolled-back")


class TxnError(Exception):
    """A transaction could not do what was asked; the message is one line a user can act on."""


class LockError(TxnError):
    """Another fixdnn holds this environment's lock."""


class Interrupted(BaseException):  # noqa: N818 - like KeyboardInterrupt, not an Exception
    """SIGINT or SIGTERM arrived while a transaction was changing the environment."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# --------------------------------------------------------------------------------------------- state


def state_root() -> Path:
    """fixdnn's per-user state directory (see :mod:`fixdnn.base.state`)."""
    return state.state_dir()


def _shared_mode(prefix: str) -> int:
    """Permission bits for the journal: those of the prefix, so whoever may change the environment may
    also journal and lock it (a group-writable shared conda env), and nobody else may."""
    try:
        return stat.S_IMODE(os.stat(prefix).st_mode) & 0o777 | 0o700
    except OSError:
        return 0o755


def env_state(prefix: str | os.PathLike[str], *, create: bool = True) -> Path:
    """``<prefix>/.fixdnn``, with its ``txn/`` journal folder. Raises OSError when it cannot be made
    (a read-only environment, another user's); see :func:`writable_state`."""
    prefix = os.fspath(prefix)
    folder = Path(prefix, STATE_IN_PREFIX)
    if create:
        mode = _shared_mode(prefix)
        for path in (folder, folder / "txn"):
            try:
                os.mkdir(path, mode)
            except FileExistsError:
                continue
            os.chmod(path, mode)  # the umask must not narrow a shared environment's journal
    return folder


def writable_state(prefix: str) -> Path:
    """:func:`env_state` or one line a user can act on (TxnError) when this user cannot write there."""
    try:
        folder = env_state(prefix)
        probe = folder / "txn" / f".probe-{os.getpid()}"  # access() is not the answer on a read-only mount
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        os.unlink(probe)
        return folder
    except OSError as exc:
        raise TxnError(_not_writable(prefix, exc)) from None


def _not_writable(prefix: str, exc: OSError) -> str:
    owner = ""
    with contextlib.suppress(OSError, KeyError, ImportError):
        import pwd

        uid = os.stat(prefix).st_uid
        if exc.errno in (errno.EACCES, errno.EPERM) and uid != os.geteuid():
            owner = pwd.getpwuid(uid).pw_name
    who = f"; run fixdnn as its owner ({owner}) or ask them" if owner else ""
    return (f"cannot write to the environment, nothing changed: {os.path.join(prefix, STATE_IN_PREFIX)}: "
            f"{exc.strerror or exc} (its journal and lock live there){who}")


CHANGED = "changed"  # <state>/changed/<key>: this user started a transaction in environment <key>


def remember(prefix: str) -> None:
    """Note in the user's own state that this user changed ``prefix`` (for :func:`interrupted_anywhere`);
    best effort: the environment's journal is the record, this is only a pointer to it. A folder of its own:
    every diagnosed environment has a state folder (its integrity cache), and looking into all of them at
    every command cost 0.2 s with 1,900 of them; this one lists only the environments changed."""
    with contextlib.suppress(OSError):
        folder = state.env_dir(prefix, create=True)
        marker = state_root() / CHANGED / folder.name
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(marker, b"")


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True).encode("ascii")  # ascii: surrogate-escaped paths survive


def _hook(point: str) -> None:
    """Test-only crash injection (see the module docstring)."""
    if os.environ.get("FIXDNN_TEST_CRASH_AT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def crash_after_delay(step: int) -> float | None:
    spec = os.environ.get("FIXDNN_TEST_CRASH_AT", "")
    parts = spec.split(":")
    if len(parts) == 3 and parts[0] == str(step) and parts[1] == "pip":
        return float(parts[2])
    return None


def fail_write_hook(step: int) -> None:
    if os.environ.get("FIXDNN_TEST_FAIL_WRITE") == str(step):
        raise OSError(errno.ENOSPC, "No space left on device (injected by FIXDNN_TEST_FAIL_WRITE)")


# ---------------------------------------------------------------------------------------------- lock


class EnvLock:
    """Exclusive, non-blocking lock on one environment; refuses at once naming the holder's pid."""

    def __init__(self, prefix: str | os.PathLike[str]):
        self.prefix = os.fspath(prefix)
        self.path = writable_state(self.prefix) / "lock"
        self.fd: int | None = None

    def __enter__(self) -> EnvLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise TxnError(_not_writable(self.prefix, exc)) from None
        with contextlib.suppress(OSError):  # whoever may journal may lock (the journal's own mode)
            if os.fstat(fd).st_uid == os.geteuid():
                os.fchmod(fd, _shared_mode(self.prefix) & 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LockError(f"another fixdnn (pid {holder}) is changing {self.prefix}; "
                            "wait for it to finish and try again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # releases the flock
            self.fd = None


def head(prefix: str | os.PathLike[str]) -> str | None:
    """The id of the environment's newest transaction (None: none yet). A plan made when the head was X
    is stale once it is not X any more: another fixdnn changed the environment meanwhile."""
    try:
        names = sorted(n for n in os.listdir(Path(prefix, STATE_IN_PREFIX, "txn")) if not n.startswith("."))
    except OSError:
        return None
    return names[-1] if names else None


def refuse_if_busy(prefix: str | os.PathLike[str]) -> None:
    """LockError now, before any planning, when another fixdnn is changing ``prefix``: a plan made while
    it runs would be made from the environment it is about to replace."""
    folder = Path(prefix, STATE_IN_PREFIX)
    if is_locked(folder):
        try:
            holder = (folder / "lock").read_bytes()[:64].decode("ascii", "replace").strip() or "unknown"
        except OSError:
            holder = "unknown"
        raise LockError(f"another fixdnn (pid {holder}) is changing {os.fspath(prefix)}; "
                        "wait for it to finish and try again")


def is_locked(prefix_state: Path) -> bool:
    try:
        fd = os.open(prefix_state / "lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# ---------------------------------------------------------------------------------------- snapshots


def scan(prefix: str, exclude: tuple[str, ...] = ()) -> dict[str, list]:
    """Every entry under ``prefix``: abs path -> [type f|l|d, mode]. Symlinks are not followed."""
    out: dict[str, list] = {}
    stack = [prefix]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            path = entry.path
            if path in exclude:
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                out[path] = ["l", 0]
            elif stat.S_ISDIR(st.st_mode):
                out[path] = ["d", stat.S_IMODE(st.st_mode)]
                stack.append(path)
            else:
                out[path] = ["f", stat.S_IMODE(st.st_mode)]
    return out


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path, ignore_errors=True)
    else:
        os.unlink(path)


def _remove_created(created: list[str]) -> None:
    """Delete what a step created: files first, then folders deepest first (only when empty)."""
    dirs = []
    for path in created:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            dirs.append(path)
        else:
            os.unlink(path)
    for path in sorted(dirs, key=lambda p: p.count("/"), reverse=True):
        with contextlib.suppress(OSError):
            os.rmdir(path)
    # A folder that only held created folders may remain: rmtree what is left of created folders.
    for path in sorted(dirs, key=lambda p: p.count("/")):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)


# ------------------------------------------------------------------------------------------ journal


def new_id() -> str:
    now = datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S}.{now.microsecond:06d}Z-{os.getpid():x}-{secrets.token_hex(2)}"


def id_time(txn_id: str) -> str:
    try:
        stamp = datetime.strptime(txn_id.split("Z")[0], "%Y%m%dT%H%M%S.%f").replace(tzinfo=timezone.utc)
    except ValueError:
        return "?"
    return stamp.astimezone().strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class Record:
    """What the journal says about one transaction."""

    id: str
    folder: Path
    records: list[dict] = field(default_factory=list)

    @property
    def begin(self) -> dict:
        return next((r for r in self.records if r["op"] == "begin"), {})

    @property
    def outcome(self) -> str:
        for rec in reversed(self.records):
            if rec["op"] == "end":
                return rec["outcome"]
        return "interrupted"

    @property
    def reason(self) -> str:
        for rec in reversed(self.records):
            if rec["op"] == "end":
                return rec.get("reason", "")
        return ""

    def intents(self) -> list[dict]:
        return [r for r in self.records if r["op"] == "intent"]

    def step_record(self, step: int, op: str) -> dict | None:
        return next((r for r in self.records if r["op"] == op and r.get("step") == step), None)


def load(folder: Path) -> Record:
    records = []
    try:
        raw = (folder / "journal.jsonl").read_bytes()
    except FileNotFoundError:
        raw = b""
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError:  # a record torn by a crash is the last one: it never counted
            break
    return Record(folder.name, folder, records)


def transactions(prefix: str | os.PathLike[str]) -> list[Record]:
    """Every transaction of this environment, oldest first."""
    folder = env_state(prefix, create=False) / "txn"
    try:
        names = sorted(p.name for p in folder.iterdir() if p.is_dir())
    except OSError:
        return []
    return [load(folder / name) for name in names]


def interrupted_anywhere(also: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """``(prefix, id)`` of every unfinished transaction that nobody holds, in the environments this user has
    changed and in ``also`` (the environment a command is about: another user may have crashed there).
    Cheap: one glob per environment."""
    found = []
    try:
        keys = sorted(os.listdir(state_root() / CHANGED))
    except OSError:
        keys = []
    prefixes = [(state.target_of(state_root() / "envs" / key) or {}).get("prefix") for key in keys]
    for prefix in dict.fromkeys([*prefixes, *(os.path.realpath(p) for p in also if p)]):
        if not isinstance(prefix, str) or not prefix:
            continue
        folder = Path(prefix, STATE_IN_PREFIX)
        opened = sorted(folder.glob("txn/*/OPEN"))
        if opened and not is_locked(folder):
            found += [(prefix, m.parent.name) for m in opened]
    return found


class Transaction:
    """One journaled change to one environment. Create with :meth:`begin` while holding :class:`EnvLock`."""

    def __init__(self, prefix: str, folder: Path, stash_root: Path):
        self.prefix = prefix
        self.folder = folder
        self.id = folder.name
        self.stash_root = stash_root
        self._journal = None

    # ------------------------------------------------------------------ creation and records
    @classmethod
    def begin(cls, prefix: str, info: dict) -> Transaction:
        prefix = os.path.realpath(prefix)
        txn_dir = env_state(prefix) / "txn"
        mode = _shared_mode(prefix)
        while True:
            folder = txn_dir / new_id()
            try:
                folder.mkdir(mode)
                break
            except FileExistsError:  # pragma: no cover - same microsecond, same pid, same random
                continue
        os.chmod(folder, mode)
        fsync_dir(txn_dir)
        remember(prefix)
        txn = cls(prefix, folder, folder / "stash")  # inside the environment: the same filesystem
        write_atomic(folder / "OPEN", b"")
        txn.append({"op": "begin", "prefix": prefix, "stash": str(txn.stash_root), "time": time.time(), **info})
        _hook("0:begin")
        return txn

    @classmethod
    def resume(cls, record: Record) -> Transaction:
        begin = record.begin
        return cls(begin.get("prefix", ""), record.folder, Path(begin.get("stash", record.folder / "stash")))

    def append(self, rec: dict) -> None:
        if self._journal is None:
            path = self.folder / "journal.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
            with contextlib.suppress(OSError):  # another member of a shared env may roll it back
                if os.fstat(fd).st_uid == os.geteuid():
                    os.fchmod(fd, _shared_mode(self.prefix) & 0o666)
            self._journal = os.fdopen(fd, "ab")
        self._journal.write(_dump(rec) + b"\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def finish(self, outcome: str, reason: str = "") -> None:
        self.append({"op": "end", "outcome": outcome, "reason": reason, "time": time.time()})
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.folder / "OPEN")
        fsync_dir(self.folder)
        self.close()

    def exclude(self) -> tuple[str, ...]:
        """Paths under the prefix that are fixdnn's own (never part of a snapshot)."""
        return (os.path.join(self.prefix, STATE_IN_PREFIX), os.fspath(state_root()))

    # ------------------------------------------------------------------ step helpers
    def write_json(self, name: str, obj: Any) -> str:
        write_atomic(self.folder / name, _dump(obj))
        return name

    def read_json(self, name: str) -> Any:
        return json.loads((self.folder / name).read_bytes())

    def prepare_stash(self, step: int, paths: list[str], stop: str, keep: tuple[str, ...] = ()) -> str:
        """Record where each path goes and the folders above it (below ``stop``, never those in ``keep``:
        the site dirs stay even when emptied), before anything moves."""
        moves = []
        dirs: dict[str, int] = {}
        for k, path in enumerate(paths):
            moves.append([path, os.path.join(os.fspath(self.stash_root), str(step), str(k))])
            parent = os.path.dirname(path)
            while parent.startswith(stop + "/") or parent == stop:
                if parent in dirs or parent == stop or parent in keep:
                    break
                with contextlib.suppress(FileNotFoundError):
                    dirs[parent] = stat.S_IMODE(os.lstat(parent).st_mode)
                parent = os.path.dirname(parent)
        return self.write_json(f"step-{step}.stash.json", {"moves": moves, "dirs": dirs, "stop": stop})

    def do_stash(self, name: str) -> int:
        manifest = self.read_json(name)
        if not manifest["moves"]:
            return 0
        folder = os.path.dirname(manifest["moves"][0][1])
        os.makedirs(folder, exist_ok=True)
        for orig, dest in manifest["moves"]:
            os.rename(orig, dest)
        fsync_dir(folder)
        # Folders the stash emptied go too, as pip's uninstall does (an empty dist-info confuses tools).
        for folder_path in sorted(manifest["dirs"], key=lambda p: p.count("/"), reverse=True):
            with contextlib.suppress(OSError):
                os.rmdir(folder_path)
        return len(manifest["moves"])

    def backup_files(self, step: int, paths: list[str]) -> str:
        """Copy each existing file (mode kept) and record missing ones and missing parent folders."""
        entries = []
        created_dirs: list[str] = []
        folder = self.folder / "backup" / str(step)
        folder.mkdir(parents=True, exist_ok=True)
        for k, path in enumerate(paths):
            if os.path.lexists(path):
                dest = folder / str(k)
                shutil.copy2(path, dest, follow_symlinks=False)
                with open(dest, "rb") as fh:
                    os.fsync(fh.fileno())
                entries.append([path, str(dest)])
            else:
                entries.append([path, None])
                parent = os.path.dirname(path)
                while not os.path.exists(parent) and parent not in created_dirs:
                    created_dirs.append(parent)
                    parent = os.path.dirname(parent)
        fsync_dir(folder)
        return self.write_json(f"step-{step}.backup.json", {"files": entries, "created_dirs": created_dirs})

    # ------------------------------------------------------------------ undo
    def undo_step(self, intent: dict, done: dict | None) -> None:
        if intent.get("pgid"):
            kill_group(intent["pgid"])
        if "stash" in intent:
            self._undo_stash(intent, done)
        if "backup" in intent:
            self._undo_backup(intent["backup"])

    def _undo_stash(self, intent: dict, done: dict | None) -> None:
        manifest = self.read_json(intent["stash"])
        # 1. Folders the stash emptied come back with their modes (shallow first).
        for folder_path, mode in sorted(manifest["dirs"].items(), key=lambda kv: kv[0].count("/")):
            if not os.path.isdir(folder_path):
                os.mkdir(folder_path)
                os.chmod(folder_path, mode)
        # 2. What the step created goes. A finished step recorded it; an interrupted one is compared
        #    with the listing taken before it started (nobody else wrote meanwhile: we held the lock).
        listing = intent.get("listing")
        if done is not None and done.get("created"):
            created = self.read_json(done["created"])
        elif done is None and listing:
            before = self.read_json(listing)
            created = [p for p in scan(self.prefix, self.exclude()) if p not in before]
        else:
            created = []
        _remove_created(created)
        # 3. The stash goes back by rename (skipping what is already back, so this can run twice).
        #    What now sits at an original path (the new version) is renamed into the trash first:
        #    freeing 500 MB inside rename() would cost more than all the renames together.
        trash = self.stash_root / "trash"
        for k, (orig, dest) in enumerate(manifest["moves"]):
            if not os.path.lexists(dest):
                continue
            os.makedirs(os.path.dirname(orig), exist_ok=True)
            if os.path.lexists(orig):
                trash.mkdir(parents=True, exist_ok=True)
                os.rename(orig, trash / f"{intent['step']}-{k}")
            os.replace(dest, orig)
        for folder_path, mode in manifest["dirs"].items():
            if os.path.isdir(folder_path):
                os.chmod(folder_path, mode)
        if listing and done is None:
            before = self.read_json(listing)
            for path, (kind, mode) in before.items():
                if kind == "d" and os.path.isdir(path) and stat.S_IMODE(os.lstat(path).st_mode) != mode:
                    os.chmod(path, mode)

    def _undo_backup(self, name: str) -> None:
        manifest = self.read_json(name)
        for path, backup in manifest["files"]:
            if backup is None:
                with contextlib.suppress(FileNotFoundError):
                    _remove(path)
            elif os.path.lexists(backup):
                tmp = f"{path}.fixdnn-restore"
                shutil.copy2(backup, tmp, follow_symlinks=False)
                os.replace(tmp, path)
        for folder_path in manifest["created_dirs"]:  # recorded deepest first
            with contextlib.suppress(OSError):
                os.rmdir(folder_path)

    def rollback(self, record: Record | None = None) -> int:
        """Undo every started step, newest first; safe to run again after a crash. Returns steps undone."""
        record = record or load(self.folder)
        already = {r["step"] for r in record.records if r["op"] == "undone"}
        self.append({"op": "rollback", "time": time.time()})
        count = 0
        for intent in reversed(record.intents()):
            step = intent["step"]
            if step not in already:
                spawned = record.step_record(step, "spawned")
                if spawned:
                    intent = {**intent, "pgid": spawned["pgid"]}
                self.undo_step(intent, record.step_record(step, "done"))
                self.append({"op": "undone", "step": step})
                count += 1
                _hook(f"undo:{step}")
        discard_later(self.stash_root)
        return count


def discard_later(folder: Path) -> None:
    """Rename ``folder`` aside (instant) and delete it in a detached process: the environment is already
    whole, and freeing the replaced files' blocks need not hold the user or the lock."""
    garbage = folder.with_name(f"{folder.name}.garbage-{secrets.token_hex(4)}")
    try:
        os.rename(folder, garbage)
    except OSError:
        return
    import subprocess
    import sys

    try:
        subprocess.Popen([sys.executable, "-c", "import shutil,sys; shutil.rmtree(sys.argv[1], True)", garbage],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    except OSError:
        shutil.rmtree(garbage, ignore_errors=True)


# ------------------------------------------------------------------------------------ child processes


def _pgrp_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(entry))
    return members


def kill_group(pgid: int, timeout: float = 10.0) -> None:
    """Kill a pip child's process group left running (the parent crashed) and wait until it is gone."""
    deadline = time.monotonic() + timeout
    members = _pgrp_members(pgid)
    if not members:
        return
    try:
        cmdlines = b" ".join(Path(f"/proc/{pid}/cmdline").read_bytes() for pid in members)
    except OSError:
        cmdlines = b"pip"
    if b"pip" not in cmdlines:  # the group id was reused by something else: leave it alone
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    while _pgrp_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


@contextlib.contextmanager
def signals_as_interrupt() -> Iterator[dict]:
    """SIGINT/SIGTERM raise :class:`Interrupted` while ``signals['armed']``; otherwise they are deferred."""
    signals: dict[str, Any] = {"armed": True, "pending": None}

    def handler(signum, frame):  # noqa: ARG001
        if signals["armed"]:
            signals["armed"] = False
            raise Interrupted(signum)
        signals["pending"] = signum

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield signals
    finally:
        for sig, previous in old.items():
            signal.signal(sig, previous)


def rollback(prefix: str, txn_id: str | None = None) -> tuple[Record, int]:
    """Undo the latest transaction (or ``txn_id``); newer ones must be undone first."""
    prefix = os.path.realpath(prefix)
    with EnvLock(prefix):
        records = transactions(prefix)
        live = [r for r in records if r.outcome not in ("rolled-back", "failed-and-rolled-back")]
        if txn_id is None:
            if not live:
                raise TxnError(f"nothing to roll back in {prefix}")
            target = live[-1]
        else:
            match = [r for r in records if r.id == txn_id or r.id.startswith(txn_id)]
            if len(match) != 1:
                raise TxnError(f"no transaction {txn_id!r} in {prefix} (see 'fixdnn history')"
                               if not match else f"{txn_id!r} matches several transactions; give more of the id")
            target = match[0]
            if target.outcome in ("rolled-back", "failed-and-rolled-back"):
                raise TxnError(f"transaction {target.id} is already rolled back")
            newer = [r.id for r in live if r.id > target.id]
            if newer:
                raise TxnError(f"transaction {target.id} has newer transactions that are still applied "
                               f"({', '.join(newer)}); roll those back first (newest first)")
        txn = Transaction.resume(target)
        with signals_as_interrupt() as sig:
            sig["armed"] = False  # a rollback is not interrupted halfway; signals wait for it
            count = txn.rollback(target)
            was = target.outcome
            txn.finish("rolled-back", f"by 'fixdnn rollback' (was {was})")
        return load(target.folder), count
