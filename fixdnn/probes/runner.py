"""Run a probe script in the target interpreter with a time limit; never let it take fixdnn down.

A probe prints one JSON object per line (each step announced before it runs, then its result). The runner
keeps those events, the stderr (bounded) and how the process ended: a normal exit, a signal (a broken
cuDNN 9 aborts with ``Invalid handle. Cannot load symbol cudnnGetVersion`` and SIGABRT: -6 from Python,
134 from a shell), or the time limit (the whole process group is killed). :func:`findings_of` turns an
abnormal end into a :class:`~fixdnn.probes.Finding` that names the step that died and shows its output.

Probes use their own ``subprocess.Popen`` rather than ``Host.run``: a hung probe must be killed together
with any children it started (its own session), which ``Host.run`` does not do.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fixdnn.probes import Finding, script
from fixdnn.target.host import stop_group

TAIL = 64 * 1024  # bytes of stderr kept in a ProbeRun


@dataclass(frozen=True)
class ProbeRun:
    probe: str  # "cudnn /path/libcudnn.so.9", "torch"
    argv: tuple[str, ...]
    returncode: int | None  # None when killed for the time limit
    signal: int | None = None
    timed_out: bool = False
    events: tuple[dict[str, Any], ...] = ()
    stderr: str = ""  # the tail
    error: str | None = None  # the probe could not be started at all
    full_stderr: str = field(default="", repr=False, compare=False)  # for --loader-trace; not kept elsewhere

    @property
    def done(self) -> bool:
        return any(e.get("done") for e in self.events)

    @property
    def last_step(self) -> str | None:
        for e in reversed(self.events):
            if "step" in e:
                return e["step"]
        return None

    def result(self, step: str) -> dict[str, Any] | None:
        """The last finished result of ``step`` (an event with ``ok``)."""
        for e in reversed(self.events):
            if e.get("step") == step and "ok" in e:
                return e
        return None

    def results(self, step: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("step") == step and "ok" in e]

    @property
    def unfinished_step(self) -> dict[str, Any] | None:
        """The step that was announced and never reported: where the process died."""
        if not self.events or self.done:
            return None
        last = self.events[-1]
        return last if "step" in last and "ok" not in last else None

    def output(self, limit: int = 4000) -> str:
        text = self.stderr.strip()
        return text[-limit:] if len(text) > limit else text


def _parse(stdout: str) -> tuple[dict[str, Any], ...]:
    events = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            events.append(obj)
    return tuple(events)


def run_probe(name: str, python: str, args: Sequence[str], *, probe: str, env: Mapping[str, str],
              cwd: str | None = None, timeout: float = 120, isolated: bool = False) -> ProbeRun:
    """Run probe script ``name`` (``cudnn`` / ``framework``) in ``python`` with ``args``."""
    argv = [python, *(["-I"] if isolated else []), "-c", script(name), *args]
    shown = (python, *(["-I"] if isolated else []), "-c", f"<fixdnn/probes/_{name}_probe.py>", *args)
    if cwd is not None and not os.path.isdir(cwd):
        cwd = None
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=dict(env), cwd=cwd, start_new_session=True)
    except OSError as exc:
        return ProbeRun(probe, shown, None, error=f"{python}: {exc.strerror or exc}")
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        out, err = stop_group(proc, b"")
    stdout = out.decode("utf-8", "replace")
    stderr = err.decode("utf-8", "replace")
    code = proc.returncode
    sig = None
    if code is not None and code < 0:
        sig = -code
    elif code is not None and code > 128 and code - 128 in (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS,
                                                            signal.SIGILL, signal.SIGFPE, signal.SIGKILL):
        sig = code - 128  # a shell or wrapper reports the signal as 128+N (134 = SIGABRT)
    return ProbeRun(probe, shown, None if timed_out else code, sig, timed_out, _parse(stdout),
                    stderr[-TAIL:], full_stderr=stderr)


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def findings_of(run: ProbeRun) -> list[Finding]:
    """Findings for a probe that did not end normally (empty when it did)."""
    step = run.unfinished_step
    where = f" during {step['step']}" + (f" of {step['path']}" if step and step.get("path") else "") if step else ""
    evidence = {"argv": list(run.argv), "last_step": run.last_step, "returncode": run.returncode}
    if run.error:
        return [Finding("probe-failed-to-start", "error", f"the {run.probe} probe could not start: {run.error}",
                        evidence, probe=run.probe)]
    if run.timed_out:
        return [Finding("probe-timeout", "error", f"the {run.probe} probe hung{where} and was killed at the time limit",
                        evidence, run.output(), run.probe)]
    if run.signal is not None:
        name = _signal_name(run.signal)
        evidence["signal"] = name
        first = next((ln for ln in run.output().splitlines() if ln.strip()), "")
        said = f": {first.strip()}" if first else ""
        return [Finding("probe-aborted" if run.signal == signal.SIGABRT else "probe-crashed", "error",
                        f"the {run.probe} probe was killed by {name}{where}{said}", evidence, run.output(), run.probe)]
    if not run.done:
        return [Finding("probe-crashed", "error",
                        f"the {run.probe} probe exited with code {run.returncode}{where} before finishing",
                        evidence, run.output(), run.probe)]
    return []


__all__ = ["ProbeRun", "findings_of", "run_probe"]
