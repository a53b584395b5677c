"""``fixdnn run -- COMMAND ...``: run a command with the environment's repairs applied.

The environment is the one the activation scripts produce (``etc/fixdnn/env.toml`` applied with
:func:`fixdnn.shell.envfile.apply_ops`, exactly what the rendered scripts do). stdout and stdin are the
command's own; stderr is streamed through as it comes and its tail is kept (bounded) so that, when the
command fails, the CLI can match it against the error signatures and explain it. The exit code is the
command's (128+N when a signal N killed it, as a shell reports it).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

TAIL_BYTES = 256 * 1024


@dataclass(frozen=True)
class RunOutcome:
    returncode: int  # shell convention: 128+N for a signal
    signal: int | None
    stderr_tail: str
    env_changes: tuple[str, ...] = ()  # what the activation scripts changed, one line each
    error: str | None = None  # the command could not be started


def activated_env(prefix: str | None, environ: Mapping[str, str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """(environment with the repairs applied, one line per operation). Raises EnvFileError for a bad file.

    Like ``conda run -p`` and ``uv run``, the environment's ``bin/`` comes first on ``PATH`` (and
    ``VIRTUAL_ENV`` / ``CONDA_PREFIX`` name it, ``PYTHONHOME`` goes, as activation does), so
    ``fixdnn --python env/bin/python run -- python ...`` runs that environment's python."""
    env = dict(environ)
    if not prefix:
        return env, ()
    from fixdnn.shell.envfile import EnvFile, apply_ops

    ops = EnvFile.load(EnvFile.path_for(prefix)).ops
    lines = tuple(f"{op.op} {op.name}" + (f" {op.value}" if op.value is not None else "") for op in ops)
    env = apply_ops(env, ops)
    base = prefix.rstrip("/") or "/"
    bindir = f"{base.rstrip('/')}/bin"
    rest = [p for p in env.get("PATH", os.defpath).split(os.pathsep) if p and p != bindir]
    env["PATH"] = os.pathsep.join([bindir] + rest)
    lines += (f"path-prepend PATH {bindir}",)
    if os.path.isfile(f"{base}/pyvenv.cfg"):
        env["VIRTUAL_ENV"] = base
    elif os.path.isdir(f"{base}/conda-meta"):
        env["CONDA_PREFIX"] = base
    env.pop("PYTHONHOME", None)
    return env, lines


def resolve(command: str, env: Mapping[str, str]) -> str | None:
    """The file ``command`` names, searched on the command's own ``PATH`` (the environment's bin/ first)."""
    if "/" in command:
        return command
    return shutil.which(command, path=env.get("PATH", os.defpath))


def run_command(argv: Sequence[str], env: Mapping[str, str], *, sink: Callable[[bytes], None],
                tail_bytes: int = TAIL_BYTES) -> RunOutcome:
    """Run ``argv``; every stderr chunk goes to ``sink`` as it arrives; the last ``tail_bytes`` are kept."""
    exe = resolve(argv[0], env)
    if exe is None:
        return RunOutcome(127, None, "", error=f"{argv[0]}: command not found (searched the environment's bin/, "
                                               "then PATH)")
    try:
        proc = subprocess.Popen([exe, *argv[1:]], env=dict(env), stderr=subprocess.PIPE)
    except OSError as exc:
        code = 127 if isinstance(exc, FileNotFoundError) else 126
        return RunOutcome(code, None, "", error=f"{argv[0]}: {exc.strerror or exc}")
    tail: deque[bytes] = deque()
    size = 0
    # The command shares the terminal's process group: Ctrl-C reaches it directly. fixdnn waits for it
    # to finish rather than dying first and leaving its output half-explained.
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert proc.stderr is not None
        fd = proc.stderr.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            sink(chunk)
            tail.append(chunk)
            size += len(chunk)
            while size - len(tail[0]) >= tail_bytes and len(tail) > 1:
                size -= len(tail.popleft())
        code = proc.wait()
    finally:
        signal.signal(signal.SIGINT, old)
        if proc.stderr is not None:
            proc.stderr.close()
    text = b"".join(tail)[-tail_bytes:].decode("utf-8", "replace")
    if code < 0:
        return RunOutcome(128 - code, -code, text)
    return RunOutcome(code, None, text)


__all__ = ["RunOutcome", "activated_env", "resolve", "run_command"]
