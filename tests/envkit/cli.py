"""Run the fixdnn command line for a test, as a process of its own::

    from tests.envkit.cli import run_fixdnn
    proc = run_fixdnn(["--json", "--python", py], env, cwd=folder, input=None, timeout=120, how="module")
    proc.returncode, proc.stdout, proc.stderr      # a subprocess.CompletedProcess, text

``how`` is the way a user starts it: ``"module"`` (``python -m fixdnn``), ``"isolated"`` (``python -I -m
fixdnn``: no PYTHON* variables, no user site, no working folder on ``sys.path``), ``"script"`` (the
``fixdnn`` console script next to this interpreter) or ``"code"`` (``python -c 'from fixdnn.cli import main;
...'``). Standard input is empty unless ``input`` is given.

**Warm start (the default).** Starting an interpreter and importing typer, rich, packaging and fixdnn is
0.18 s of the 0.3 s a diagnosis takes, and the suite starts some 250 fixdnn processes. So each pytest worker
keeps a server (tests/envkit/warm_server.py) that has imported them once and forks a child per call. The
child takes the call's argv, environment, working folder, ``sys.path[0]`` and standard streams, runs
``fixdnn.cli.main`` and ends the way the interpreter ends (non-daemon threads, atexit, flush, exit 120 when
the flush fails). It is a real process: its own pid, files and exit status, and a timeout kills it.

What a fork cannot repeat is what happens before ``main``: the interpreter reads PYTHON* variables and the
locale, the dynamic loader maps LD_PRELOAD / LD_LIBRARY_PATH into the interpreter itself, and typer reads
a few variables at import. So a server serves only calls whose values of those variables are the ones it
was started with (:data:`STARTUP_VARS`; a new set gets a server of its own at its second call, up to
:data:`MAX_SERVERS`), and a call that sets a loader variable (``LD_*``) always starts a real interpreter, as
does every call when ``FIXDNN_TEST_REAL_CLI=1``: .ci/run's Python 3.10 pass runs the whole suite that way,
so nothing the warm start skips goes untested.
"""

from __future__ import annotations

import atexit
import collections
import json
import locale
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import fixdnn

REAL_VAR = "FIXDNN_TEST_REAL_CLI"
# Read by the interpreter before any code runs, or by typer at import: a server started with other values
# would not be the process a user starts.
STARTUP_VARS = ("LANG", "LC_ALL", "LC_CTYPE", "TYPER_USE_RICH", "TERMINAL_WIDTH", "_TYPER_FORCE_DISABLE_TERMINAL")
MAX_SERVERS = 6  # a server holds about 30 MB
# A server costs more than one real start (it imports every fixdnn module): a set of start-up values gets
# one at its second call, so the one-off values of a single test (a PYTHONPATH into its tmp_path) do not
# take the places of the values most calls share.
SERVER_AT_CALL = 2
_SCRIPT = str(Path(sys.executable).parent / "fixdnn")
_CODE = "import sys; from fixdnn.cli import main; sys.exit(main())"
_SERVER_SOURCE = (Path(__file__).with_name("warm_server.py")).read_text(encoding="utf-8")


def argv_for(how: str) -> list[str]:
    """The command a user types to start fixdnn this way (what a real start runs)."""
    return {"module": [sys.executable, "-m", "fixdnn"], "isolated": [sys.executable, "-I", "-m", "fixdnn"],
            "script": [_SCRIPT], "code": [sys.executable, "-c", _CODE]}[how]


def _startup_key(env: dict[str, str], flags: tuple[str, ...] = ()) -> tuple | None:
    """The interpreter's options and the variables that decide how it starts; None when only a real start
    will do."""
    if any(k.startswith("LD_") for k in env):
        return None
    return flags, tuple(sorted((k, v) for k, v in env.items() if k in STARTUP_VARS or k.startswith("PYTHON")))


def _sys_argv(how: str, args: list[str]) -> list[str]:
    """``sys.argv`` as the interpreter sets it for each way of starting."""
    main = str(Path(fixdnn.__file__).with_name("__main__.py"))
    first = {"module": main, "isolated": main, "code": "-c", "script": _SCRIPT}[how]
    return [first, *args]


def _path0(how: str, cwd: str) -> str | None:
    """``sys.path[0]`` as the interpreter sets it: the working folder for ``-m``, ``''`` for ``-c``, the
    script's folder for a console script; nothing at all with ``-I``."""
    return {"module": cwd, "isolated": None, "code": "", "script": os.path.dirname(_SCRIPT)}[how]


class _Server:
    def __init__(self, env: dict[str, str], flags: tuple[str, ...]):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen([sys.executable, *flags, "-c", _SERVER_SOURCE, str(theirs.fileno())], env=env,
                                     pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
        theirs.close()
        self.sock = mine
        self.lock = threading.Lock()

    def close(self) -> None:
        self.sock.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def _reply(self, deadline: float | None) -> int | None:
        self.sock.settimeout(None if deadline is None else max(0.0, deadline - time.monotonic()))
        try:
            data = self.sock.recv(8)
        except TimeoutError:
            return None
        if len(data) != 8:
            raise RuntimeError(f"the warm fixdnn server ended (exit {self.proc.poll()})")
        return struct.unpack("!q", data)[0]

    def run(self, argv: list[str], sys_argv: list[str], env: dict[str, str], cwd: str, path0: str | None,
            input: str | None, timeout: float | None, code: str | None = None) -> subprocess.CompletedProcess:
        """One call (``code``: a ``python -c`` snippet instead of fixdnn's main), as subprocess.run(text=True)
        would return it; ``argv`` is only what the result and a TimeoutExpired show."""
        with self.lock:
            in_r, in_w = os.pipe()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            # json.dumps writes ASCII: surrogates of undecodable paths travel as \u escapes
            call = json.dumps({"argv": sys_argv, "env": env, "cwd": cwd, "path0": path0, "code": code})
            try:
                socket.send_fds(self.sock, [call.encode("ascii")], [in_r, out_w, err_w])
            finally:
                for fd in (in_r, out_w, err_w):
                    os.close(fd)
            deadline = None if timeout is None else time.monotonic() + timeout
            pid = self._reply(None)
            out, err = bytearray(), bytearray()
            readers = [threading.Thread(target=_drain, args=(fd, buf), daemon=True)
                       for fd, buf in ((out_r, out), (err_r, err))]
            readers.append(threading.Thread(target=_feed, args=(in_w, input), daemon=True))
            for reader in readers:
                reader.start()
            status = self._reply(deadline)
            if status is None:
                os.kill(pid, signal.SIGKILL)
                self._reply(None)
                for reader in readers:
                    reader.join()
                raise subprocess.TimeoutExpired(argv, timeout, _text(out), _text(err))
            for reader in readers:
                reader.join()
            return subprocess.CompletedProcess(argv, status, _text(out), _text(err))


def _drain(fd: int, buf: bytearray) -> None:
    with open(fd, "rb", buffering=0) as fh:
        while chunk := fh.read(1 << 16):
            buf += chunk


def _feed(fd: int, text: str | None) -> None:
    try:
        if text:
            with open(fd, "wb") as fh:
                fh.write(text.encode(locale.getpreferredencoding(False)))
        else:
            os.close(fd)
    except BrokenPipeError:
        pass


def _text(data: bytearray) -> str:
    """Decoded as ``subprocess.run(text=True)`` decodes: the locale's encoding, universal newlines."""
    return bytes(data).decode(locale.getpreferredencoding(False)).replace("\r\n", "\n").replace("\r", "\n")


_servers: dict[tuple, _Server] = {}
_calls: collections.Counter = collections.Counter()  # calls made with each set of start-up values


@atexit.register
def _close_servers() -> None:
    while _servers:
        _servers.popitem()[1].close()


def _server_for(env: dict[str, str], flags: tuple[str, ...] = ()) -> _Server | None:
    key = _startup_key(env, flags)
    if key is None or os.environ.get(REAL_VAR) == "1":
        return None
    server = _servers.get(key)
    if server is None or server.proc.poll() is not None:
        _calls[key] += 1
        if server is None and (_calls[key] < SERVER_AT_CALL or len(_servers) >= MAX_SERVERS):
            return None
        server = _servers[key] = _Server(env, flags)
    return server


def _run(argv: list[str], sys_argv: list[str], path0_for, env: dict[str, str], cwd, input: str | None,
         timeout: float | None, flags: tuple[str, ...] = (), code: str | None = None) -> subprocess.CompletedProcess:
    """``argv`` started for real, or its warm equivalent (``sys_argv``, ``path0_for(cwd)``, ``code``)."""
    server = _server_for(env, flags)
    if server is None:
        return subprocess.run(argv, env=env, cwd=cwd, input=input, capture_output=True, text=True,
                              timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
    where = os.path.abspath(cwd if cwd is not None else os.getcwd())
    return server.run(argv, sys_argv, env, where, path0_for(where), input, timeout, code=code)


def run_python(code: str, args: list[str], env: dict[str, str], *, cwd: str | os.PathLike | None = None,
               timeout: float | None = 120) -> subprocess.CompletedProcess:
    """``python -c code args...`` in a process of its own: warm like :func:`run_fixdnn` (a fork of the server,
    which has fixdnn imported) when the environment allows it, else a real interpreter."""
    args = [os.fspath(a) for a in args]
    return _run([sys.executable, "-c", code, *args], ["-c", *args], lambda _cwd: "", env, cwd, None, timeout,
                code=code)


def run_fixdnn(args: list[str], env: dict[str, str], *, cwd: str | os.PathLike | None = None,
               input: str | None = None, timeout: float | None = 120,
               how: str = "module") -> subprocess.CompletedProcess:
    """fixdnn ``args`` in a process of its own (see the module's docstring); never raises on a failing
    exit status. Raises subprocess.TimeoutExpired after killing the process."""
    args = [os.fspath(a) for a in args]
    return _run([*argv_for(how), *args], _sys_argv(how, args), lambda where: _path0(how, where), env, cwd, input,
                timeout, ("-I",) if how == "isolated" else ())
