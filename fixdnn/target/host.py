"""The only door to the outside world: file reads under an optional root, environment, subprocesses.

Probes never touch ``os``/``open``/``subprocess`` directly; they take a :class:`Host`. With ``root`` set,
every absolute path is read below that directory (a mounted container image, a test tree), and symlinks
are resolved *inside* the root, the way the loader of that image would see them.

With ``system`` set (or ``FIXDNN_SYSTEM_ROOT`` in fixdnn's own environment), only the machine-wide places
of :data:`SYSTEM_PLACES` (the loader cache, the default library directories, ``/opt``, ``/usr/local``, the
driver's files) are read below that directory, while the target environment itself is read where it is.
This is how a test diagnoses a real venv against a machine it planted, and never against the one it runs on.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat as stat_mod
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_MAX_SYMLINKS = 40  # the kernel's own limit (ELOOP)

# Everywhere diagnosis looks that belongs to the machine rather than to the target environment. A Host with
# a ``system`` directory reads these (and everything below them) there instead.
SYSTEM_PLACES = (
    "/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/opt", "/usr/local", "/proc/driver",
    "/sys/module", "/sys/devices/system/cpu", "/lib", "/lib32", "/lib64", "/libx32", "/usr/lib", "/usr/lib32",
    "/usr/lib64", "/usr/libx32", "/.dockerenv", "/run/.containerenv", "/usr/share/jupyter", "/etc/pip.conf",
    "/etc/xdg/pip",
)
SYSTEM_ROOT_VAR = "FIXDNN_SYSTEM_ROOT"


_PLACES = frozenset(SYSTEM_PLACES)
_BELOW_PLACES = tuple(place + "/" for place in SYSTEM_PLACES)


def _under_system(path: str) -> bool:
    return path in _PLACES or path.startswith(_BELOW_PLACES)


class HostError(Exception):
    """A read that failed; the message is one line naming the path and the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _reason(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


def stop_group(proc: subprocess.Popen, empty):
    """Kill a process started with ``start_new_session=True`` and all it started; (stdout, stderr) so far
    (``empty`` for each when a grandchild that left the group still holds the pipes)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    try:
        return proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return empty, empty


@dataclass(frozen=True)
class RunResult:
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False


class Host:
    def __init__(self, root: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None,
                 system: str | os.PathLike | None = None):
        """``environ``: the target's environment (default: this process's). ``system``: where the machine-wide
        places are read (default: ``FIXDNN_SYSTEM_ROOT`` from fixdnn's own environment, else the machine
        itself; ``"/"`` says "the machine" even when that variable is set). Ignored under ``root``."""
        self.root = Path(root).resolve() if root is not None else None
        self.environ: Mapping[str, str] = dict(os.environ if environ is None else environ)
        if system is None:
            system = os.environ.get(SYSTEM_ROOT_VAR) or None
        system = os.path.realpath(system) if system is not None and self.root is None else None
        self.system: str | None = None if system in (None, "/") else system
        self._mapped = self.root is not None or self.system is not None

    # -- paths -------------------------------------------------------------------------------------
    def real(self, path: str) -> Path | str:
        """The on-disk location of ``path`` as the target sees it (no symlink resolution)."""
        if not self._mapped:
            return path  # a str: stat() and open() on hot paths skip pathlib's parsing
        p = os.path.normpath("/" + path.lstrip("/")) if os.path.isabs(path) else path
        if self.root is not None:
            return self.root / p.lstrip("/")
        return self.system + p if os.path.isabs(path) and _under_system(p) else path

    def on_disk(self, path: str) -> str:
        """Where the file the target calls ``path`` really is, symlinks followed the target's way."""
        return str(self.real(self.realpath(path))) if self._mapped else path

    def realpath(self, path: str) -> str:
        """Resolve symlinks the way the target would, staying inside the root. Returns a target path.

        A broken or looping link is not an error here: the unresolved remainder is kept, and callers see
        that the result does not exist.
        """
        if not self._mapped:
            return os.path.realpath(path)
        if self.root is None and not path.startswith("/"):
            path = os.path.abspath(path)  # relative to our cwd, as os.path.realpath would take it
        todo = [p for p in reversed(path.split("/")) if p]  # the next component last: pop() is O(1)
        resolved = ""  # "" is "/"; else "/a/b", already free of ".", ".." and links
        hops = 0
        while todo:
            part = todo.pop()
            if part == ".":
                continue
            if part == "..":
                resolved = resolved.rpartition("/")[0]
                continue
            candidate = resolved + "/" + part
            try:
                link = os.readlink(self._real_clean(candidate))
            except OSError:
                resolved = candidate
                continue
            hops += 1
            if hops > _MAX_SYMLINKS:
                return "/".join([candidate, *reversed(todo)])
            if link.startswith("/"):
                resolved = ""
            todo.extend(p for p in reversed(link.split("/")) if p)
        return resolved or "/"

    def _real_clean(self, path: str) -> Path | str:
        """:meth:`real` of an absolute path already free of ``.``, ``..`` and repeated slashes."""
        if self.root is not None:
            return self.root / path[1:]
        return self.system + path if _under_system(path) else path

    # -- reads -------------------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        try:
            os.stat(self.on_disk(path))
            return True
        except (OSError, ValueError):
            return False

    def is_dir(self, path: str) -> bool:
        try:
            return stat_mod.S_ISDIR(self.stat(path).st_mode)
        except HostError:
            return False

    def is_file(self, path: str) -> bool:
        try:
            return stat_mod.S_ISREG(self.stat(path).st_mode)
        except HostError:
            return False

    def stat(self, path: str) -> os.stat_result:
        """stat() following symlinks (inside the root)."""
        target = self.on_disk(path)
        try:
            return os.stat(target)
        except (OSError, ValueError) as exc:
            raise HostError(path, _reason(exc) if isinstance(exc, OSError) else str(exc)) from None

    def lstat(self, path: str) -> os.stat_result:
        try:
            return os.lstat(self.real(path))
        except (OSError, ValueError) as exc:
            raise HostError(path, _reason(exc) if isinstance(exc, OSError) else str(exc)) from None

    def listdir(self, path: str) -> list[str]:
        """Sorted entry names; raises HostError for a missing or unreadable directory."""
        target = self.on_disk(path)
        try:
            return sorted(os.listdir(target))
        except (OSError, ValueError) as exc:
            raise HostError(path, _reason(exc) if isinstance(exc, OSError) else str(exc)) from None

    def read_text(self, path: str, limit: int = 4 << 20) -> str:
        """Read at most ``limit`` bytes as UTF-8 (undecodable bytes replaced: METADATA can be odd)."""
        return self.read_bytes(path, limit).decode("utf-8", errors="replace")

    def read_bytes(self, path: str, limit: int = 4 << 20) -> bytes:
        with self.open_binary(path, buffering=0) as fh:
            try:
                # read(limit) allocates ``limit`` bytes up front (64 MiB for a RECORD): ask for the file's
                # size instead, then for whatever a growing or size-less file (/proc) still holds
                size = os.fstat(fh.fileno()).st_size
                data = fh.read(min(limit, size + 1)) if size else b""
                if len(data) < limit and (not size or len(data) > size):
                    data += fh.read(limit - len(data)) or b""
                return data
            except OSError as exc:
                raise HostError(path, _reason(exc)) from None

    def open_binary(self, path: str, buffering: int = -1):
        """An open binary file object (for streaming readers such as the ELF parser and hashing).

        Only regular files are opened: a FIFO named ``METADATA`` or a device would block a read forever,
        so the open itself does not block (O_NONBLOCK) and anything else is refused before reading."""
        target = self.on_disk(path)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, ValueError) as exc:
            raise HostError(path, _reason(exc) if isinstance(exc, OSError) else str(exc)) from None
        try:
            mode = os.fstat(fd).st_mode
            if not stat_mod.S_ISREG(mode):
                raise HostError(path, "not a regular file" + (" (a FIFO)" if stat_mod.S_ISFIFO(mode) else ""))
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb", buffering=buffering)
        except BaseException:
            os.close(fd)
            raise

    def glob_dirs(self, path: str) -> Iterator[str]:
        """Subdirectories of ``path`` (target paths), silently empty when unreadable."""
        try:
            names = self.listdir(path)
        except HostError:
            return
        for name in names:
            child = path.rstrip("/") + "/" + name
            if self.is_dir(child):
                yield child

    # -- environment and processes -----------------------------------------------------------------
    def env(self, name: str, default: str | None = None) -> str | None:
        return self.environ.get(name, default)

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        cwd: str | None = None,
    ) -> RunResult:
        """Run a program; a missing program or a timeout is a result, not an exception.

        The program runs in its own session, so a timeout kills it with every process it started (a
        probe that loads a driver library may leave helpers behind), and, unless ``cwd`` says otherwise,
        in a private empty folder: a program of the target (``python -c``, ``python -m pip``) puts its
        working directory on ``sys.path``, and a ``json.py`` or ``pip/`` in the user's folder must never
        run because fixdnn looked at an environment."""
        if cwd is None:
            private = tempfile.mkdtemp(prefix="fixdnn-run-")
            try:
                return self.run(argv, timeout=timeout, env=env, input=input, cwd=private)
            finally:
                shutil.rmtree(private, ignore_errors=True)
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
                env=dict(self.environ if env is None else env),
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            return RunResult(127, "", f"{argv[0]}: {_reason(exc)}")
        try:
            out, err = proc.communicate(input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            out, err = stop_group(proc, "")
            return RunResult(-1, out or "", err or "", timed_out=True)
        except BaseException:  # Ctrl-C: the child is in its own session and would not see it
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            raise
        return RunResult(proc.returncode, out, err)


def file_identity(host: Host, path: str) -> list[int] | None:
    """What changes when a file's content can change (:func:`fixdnn.base.filecache.identity`); None when
    the file cannot be stat'ed."""
    from fixdnn.base.filecache import identity

    try:
        return identity(host.stat(path))
    except HostError:
        return None
