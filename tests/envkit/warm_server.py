"""The warm fixdnn server of tests/envkit/cli.py: run as ``python -c <this file's text> FD`` (not imported).

It imports every fixdnn module, then serves one call at a time on the SOCK_SEQPACKET socket FD: a call is a
JSON message {argv, env, cwd, path0, code} with three file descriptors (stdin, stdout, stderr). It forks;
the child becomes that call (streams, working folder, environment, argv, sys.path[0]), runs
``fixdnn.cli.main`` (or, given ``code``, runs it as ``python -c`` would) and ends as the interpreter would.
The server replies with the child's pid, then with its exit status (``subprocess``'s convention: -N for a
signal). An empty message, or EOF, ends the server. Only the standard library and fixdnn are imported
here: the server knows nothing of the tests.
"""

import atexit
import json
import os
import socket
import struct
import sys
import threading
import traceback

if sys.path and sys.path[0] == "":
    del sys.path[0]  # ``-c`` put the server's working folder first; each child sets its own sys.path[0]

import importlib  # noqa: E402
from pathlib import Path  # noqa: E402

import fixdnn  # noqa: E402
from fixdnn.cli import main  # noqa: E402
from fixdnn.symptoms.registry import load_all, load_rules  # noqa: E402

# Every module a command may import: 0.18 s of start-up and imports a diagnosis no longer pays, and 20 ms
# more for the modules commands import on their way. The symptom families first, in the registry's own
# order, then the rest; not the scripts fixdnn runs in other interpreters (``_*.py``) or writes into
# environments.
NEVER_IMPORTED = {"fixdnn.shell.preload_hook"}
load_all()
_top = Path(fixdnn.__file__).parent
for _file in sorted(_top.rglob("*.py")):
    _name = ".".join(("fixdnn", *_file.relative_to(_top).with_suffix("").parts))
    if not _name.rpartition(".")[2].startswith("_") and _name not in NEVER_IMPORTED:
        importlib.import_module(_name)
# The shipped rules, parsed once here: fixdnn.knowledge.rules keeps each file's parse while the file is
# unchanged, so a child that plans or explains checks the files' identity instead of parsing them again.
try:
    load_rules(include_user=False)
except Exception:  # noqa: BLE001 - a broken rules file: each child meets it and says so, as a real start does
    pass


def _after(call: dict) -> None:
    """What the server learns from a call it served: a lockfile command imports conda-lock's models
    (0.35 s), so the next one should find them imported."""
    if any(arg in ("--lock", "lock") or arg.startswith("--lock=") for arg in call["argv"]):
        from fixdnn.facts import lockfile

        lockfile.available()  # imports them (or finds conda-lock missing)


def _exit_code(code) -> int:
    """What ``sys.exit(code)`` makes the interpreter exit with."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _become(call: dict, fds: list[int], server: int) -> None:
    """In the child: take the call's streams, folder, environment and argv; run; end as python does."""
    code = 1
    try:
        os.close(server)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        os.chdir(call["cwd"])
        os.environ.clear()
        os.environ.update(call["env"])
        sys.argv = list(call["argv"])
        if call["path0"] is not None:
            sys.path.insert(0, call["path0"])
        if call.get("code") is None:
            code = _exit_code(main())
        else:
            import builtins

            exec(compile(call["code"], "<string>", "exec"), {"__name__": "__main__", "__builtins__": builtins})
            code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught exception
        traceback.print_exc()
        code = 1
    try:  # the interpreter's own ending: wait for non-daemon threads, run atexit, flush the streams
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - a flush into a closed pipe: python exits 120
        code = 120
    os._exit(code)


def serve(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    while True:
        try:
            message, fds, _flags, _addr = socket.recv_fds(sock, 1 << 22, 3)
        except OSError:
            return
        if not message:
            return
        call = json.loads(message)
        pid = os.fork()
        if pid == 0:
            _become(call, fds, sock.fileno())
        for fd in fds:
            os.close(fd)
        sock.sendall(struct.pack("!q", pid))
        _pid, status = os.waitpid(pid, 0)
        sock.sendall(struct.pack("!q", os.waitstatus_to_exitcode(status)))
        _after(call)


serve(int(sys.argv[1]))
