"""``fixdnn verify`` beyond an activated shell: a plain ``env/bin/python`` and a real Jupyter kernel.

* **plain**: the framework probe runs again in a cron-like environment: ``HOME``, ``USER``, ``LANG``,
  ``PATH=/usr/bin:/bin`` and nothing else (no activation, no ``LD_LIBRARY_PATH``, no ``VIRTUAL_ENV``), the
  way cron, an IDE or ``python -m`` from another tool start the interpreter. Only the in-process hook can
  carry the repair there.
* **kernel**: for each kernelspec that runs this environment, the target's own ``jupyter_client`` starts
  the kernel exactly as Jupyter does (the kernelspec's argv and env) and imports each framework in it.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

from fixdnn.probes import Finding
from fixdnn.probes.runner import ProbeRun, findings_of, run_probe

PLAIN_KEEP = ("HOME", "USER", "LOGNAME", "LANG", "TMPDIR")
PLAIN_LABEL = "plain env/bin/python, no activation"


def plain_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """What cron gives a job: a few identity variables and a minimal PATH."""
    env = {k: environ[k] for k in PLAIN_KEEP if k in environ}
    env["PATH"] = "/usr/bin:/bin"
    return env


def kernel_run(python: str, spec, frameworks: list[str], environ: Mapping[str, str], timeout: float) -> ProbeRun:
    cfg = json.dumps({"kernel_dir": os.path.dirname(spec.path), "frameworks": frameworks,
                      "timeout": max(10.0, timeout - 10)})
    return run_probe("kernel", python, [cfg], probe=f"kernel {spec.name}", env=environ, timeout=timeout)


def kernel_findings(run: ProbeRun, spec) -> tuple[list[Finding], list[str]]:
    findings, passed = findings_of(run), []
    where = f"kernel {spec.name} ({spec.path})"
    client = run.result("jupyter_client")
    if client is not None and not client["ok"]:
        return [Finding("kernel-probe-skipped", "info",
                        f"{where}: not started: the environment has no jupyter_client ({client.get('error')})",
                        {"kernelspec": spec.path}, probe=run.probe)], []
    for step in ("start", "execute"):
        r = run.result(step)
        if r is not None and not r["ok"]:
            findings.append(Finding("kernel-failed", "error", f"{where}: {step} failed: {r.get('error')}",
                                    {"kernelspec": spec.path, "step": step, "error": r.get("error")},
                                    r.get("output") or run.output(), run.probe))
            return findings, passed
    r = run.result("execute")
    if r is None:
        return findings, passed
    value = r.get("value") or {}
    for name, got in (value.get("frameworks") or {}).items():
        if got.get("import"):
            extra = f" (cuDNN {got['cudnn']})" if got.get("cudnn") is not None else ""
            passed.append(f"{where}: import {name} works{extra}")
            if got.get("cudnn_error"):
                findings.append(Finding("kernel-framework-failed", "error",
                                        f"{where}: {name}: cuDNN version query failed: {got['cudnn_error']}",
                                        {"kernelspec": spec.path, "framework": name, "error": got["cudnn_error"]},
                                        probe=run.probe))
        else:
            findings.append(Finding("kernel-framework-failed", "error",
                                    f"{where}: import {name} failed: {got.get('error')}",
                                    {"kernelspec": spec.path, "framework": name, "error": got.get("error"),
                                     "LD_LIBRARY_PATH": value.get("LD_LIBRARY_PATH")}, probe=run.probe))
    return findings, passed


def model_for(facts, environ: Mapping[str, str]):
    """The facts as the loader of a process started with ``environ`` sees them (the caller's facts when they
    cannot be gathered again)."""
    from fixdnn.facts import gather
    from fixdnn.target.host import Host
    from fixdnn.target.interpreter import TargetSpec

    try:
        return gather(Host(environ=dict(environ)), TargetSpec(python=facts.target.python), save_cache=False)
    except Exception:  # noqa: BLE001 - a model we cannot build: compare with the caller's facts
        return facts


def plain_model_environ(prefix: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The cron-like environment with the in-process hook's copies mapped first, as ``LD_PRELOAD`` maps them
    (both load a copy by path before the framework asks for its SONAME): the plain process's loader model."""
    from fixdnn.shell.envfile import EnvFile, EnvFileError
    from fixdnn.shell.preload import describe

    env = plain_environ(environ)
    try:
        if describe(prefix)["installed"]:
            preloads = [p.path for p in EnvFile.load(EnvFile.path_for(prefix)).preloads]
            if preloads:
                env["LD_PRELOAD"] = " ".join(preloads)
    except (EnvFileError, OSError):
        pass
    return env


def has_changes(prefix: str | None) -> bool:
    """Whether fixdnn changed this environment's variables or preloads (so plain and activated differ)."""
    if not prefix:
        return False
    from fixdnn.shell.envfile import EnvFile, EnvFileError

    try:
        env = EnvFile.load(EnvFile.path_for(prefix))
    except (EnvFileError, OSError):
        return True  # a broken env.toml: check the plain interpreter too
    return bool(env.ops or env.preloads)


__all__ = ["PLAIN_LABEL", "has_changes", "model_for", "plain_model_environ", "kernel_findings", "kernel_run", "plain_environ"]
