"""``fixdnn verify``: run every probe for one target and collect findings (pure orchestration, no printing).

For each cuDNN copy the loader model resolves (or, without frameworks, each copy on disk), the cuDNN probe;
for each installed framework, the framework probe. Then what loaded is compared with the model. With
``loader_trace`` every failing probe is run again under ``LD_DEBUG=libs`` and the search trace of the
library that failed is kept, trimmed to what matters.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from fixdnn.model.facts import Facts
from fixdnn.probes import Finding, everywhere
from fixdnn.probes.compare import compare_outcomes, compare_version, decode_cudnn
from fixdnn.probes.runner import ProbeRun, findings_of, run_probe

FRAMEWORKS = ("torch", "tensorflow", "jax", "onnxruntime")
MAX_CUDNN_COPIES = 8
_CANNOT_OPEN = re.compile(r"(lib[\w.+-]+?\.so(?:\.[\w.]+)?): cannot open shared object file")
_INVALID_HANDLE = re.compile(r"Invalid handle\. Cannot load symbol (cudnn\w+)")


@dataclass(frozen=True)
class VerifyResult:
    python: str | None
    findings: tuple[Finding, ...] = ()
    passed: tuple[str, ...] = ()  # what worked, one line each
    runs: tuple[ProbeRun, ...] = ()
    traces: dict[str, str] = field(default_factory=dict)  # soname -> trimmed LD_DEBUG=libs trace

    @property
    def exit_code(self) -> int:
        return 1 if any(f.severity == "error" for f in self.findings) else 0

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "fixdnn.verify/1", "python": self.python, "ok": self.exit_code == 0,
                "passed": list(self.passed), "findings": [f.to_dict() for f in self.findings],
                "loader_traces": dict(self.traces)}


def probe_environ(prefix: str | None, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a process of the target gets once its activation scripts ran (idempotent)."""
    env = dict(environ)
    if prefix:
        from fixdnn.shell.envfile import EnvFile, EnvFileError, apply_ops

        try:
            env = apply_ops(env, EnvFile.load(EnvFile.path_for(prefix)).ops)
        except (EnvFileError, OSError):
            pass  # a broken env.toml is reported by `fixdnn env`; probe with the environment as it is
    return env


def cudnn_targets(facts: Facts, host) -> list[tuple[str, list[str], list]]:
    """(shim path, sub-library paths to load, the model's sub-library outcomes for that shim)."""
    out: dict[str, tuple[str, list[str], list]] = {}
    for o in facts.loads:
        if o.library != "cudnn" or o.path is None:
            continue
        key = host.realpath(o.path)
        if key in out:
            continue
        subs = [s for s in facts.loads_of(o.framework) if s.library.startswith("cudnn_")]
        out[key] = (o.path, [s.path for s in subs if s.path], subs)
    if not out:
        for c in facts.copies("cudnn"):
            if c.error is None and c.realpath not in out:
                out[c.realpath] = (c.path, [], [])
    result = []
    for path, subs, outcomes in list(out.values())[:MAX_CUDNN_COPIES]:
        lib_dir = os.path.dirname(path)
        major = os.path.basename(path).rsplit(".so.", 1)[-1].split(".")[0]
        try:
            for name in host.listdir(lib_dir):
                if name.startswith("libcudnn_") and name.endswith(f".so.{major}"):
                    full = f"{lib_dir}/{name}"
                    if full not in subs:
                        subs.append(full)
        except Exception:  # noqa: BLE001 - an unreadable dir: load what the model named
            pass
        result.append((path, sorted(dict.fromkeys(subs)), outcomes))
    return result


def _cudnn_findings(facts: Facts, host, run: ProbeRun, shim: str, outcomes: list) -> tuple[list[Finding], list[str]]:
    findings, passed = findings_of(run), []
    probe = run.probe
    load = run.result("load")
    if load is not None and not load["ok"]:
        findings.append(Finding("cudnn-load-failed", "error", f"{shim} cannot be loaded: {load.get('error')}",
                                {"path": shim, "error": load.get("error")}, run.output(), probe))
    version = run.result("cudnnGetVersion")
    files = (run.result("maps") or {}).get("files") or []
    if version is not None and version["ok"]:
        v = version["value"]
        passed.append(f"{shim}: cudnnGetVersion() = {v} ({'.'.join(map(str, decode_cudnn(v)))})")
        findings += compare_version(facts, shim, v, files, probe=probe)
    cudart = run.result("cudnnGetCudartVersion")
    if cudart is not None and cudart["ok"]:
        passed.append(f"{shim}: cudnnGetCudartVersion() = {cudart['value']}")
    prop = run.result("cudnnGetProperty")
    if prop is not None and prop["ok"]:
        passed.append(f"{shim}: cudnnGetProperty() = {prop['value']}")
    bad_subs = [r for r in run.results("load-sub") if not r["ok"]]
    for r in bad_subs:
        findings.append(Finding("cudnn-sublibrary-load-failed", "error",
                                f"{os.path.basename(r['path'])} cannot be loaded: {r.get('error')}",
                                {"path": r["path"], "shim": shim, "error": r.get("error")}, probe=probe))
    good = [r for r in run.results("load-sub") if r["ok"]]
    if good:
        passed.append(f"{shim}: {len(good)} sub-librar{'y' if len(good) == 1 else 'ies'} loaded by path")
    create = run.result("cudnnCreate")
    if create is not None:
        if create["ok"]:
            passed.append(f"{shim}: cudnnCreate() = 0 CUDNN_STATUS_SUCCESS")
        elif not create.get("driver") or not create.get("gpus"):
            what = "no NVIDIA driver (libcuda.so.1 cannot be loaded)" if not create.get("driver") else "no GPU visible"
            findings.append(Finding(
                "cudnn-no-gpu", "info",
                f"cudnnCreate() returned {create.get('status')} {create.get('name')}: {what}. This is what cuDNN "
                "does without a GPU; the library itself loaded and answered",
                {"path": shim, "status": create.get("status"), "name": create.get("name"),
                 "driver": create.get("driver"), "gpus": create.get("gpus"), "detail": create.get("detail")},
                probe=probe))
        else:
            findings.append(Finding(
                "cudnn-create-failed", "error",
                f"cudnnCreate() returned {create.get('status')} {create.get('name')} although a driver and "
                f"{create.get('gpus')} GPU(s) are visible (rerun with CUDNN_LOGLEVEL_DBG=3 CUDNN_LOGDEST_DBG=stderr "
                "for the reason)", {"path": shim, "status": create.get("status"), "name": create.get("name")},
                run.output(), probe))
    if files and outcomes:
        findings += compare_outcomes(facts, host, outcomes, files, probe=probe,
                                     lazy={o.library for o in outcomes})
    return findings, passed


def _framework_findings(facts: Facts, host, run: ProbeRun, name: str) -> tuple[list[Finding], list[str]]:
    findings, passed = findings_of(run), []
    probe = run.probe
    labels = {"import": f"import {name}", "conv2d-cpu": "conv2d on the CPU", "cudnn-version": "cuDNN version query",
              "conv2d-gpu": "conv2d on the GPU"}
    for step, label in labels.items():
        r = run.result(step)
        if r is None:
            continue
        if r["ok"]:
            value = r.get("value")
            passed.append(f"{name}: {label} works" + (f" ({value})" if step == "cudnn-version" else ""))
        else:
            kind = "framework-import-failed" if step == "import" else "framework-op-failed"
            findings.append(Finding(kind, "error", f"{name}: {label} failed: {_first_line(r.get('error', ''))}",
                                    {"framework": name, "step": step, "error": r.get("error")},
                                    run.output(), probe))
    gpus = run.result("gpu-count")
    if gpus is not None and gpus["ok"] and not gpus.get("value"):
        findings.append(Finding("framework-no-gpu", "info", f"{name}: no GPU visible; the GPU conv2d was not run",
                                {"framework": name}, probe=probe))
    maps = run.result("maps") or {}
    files = maps.get("files") or []
    imported = (run.result("import") or {}).get("ok")
    fw = next((f for f in facts.frameworks if f.name == name), None)
    if files and imported and fw is not None:
        outcomes = list(facts.loads_of(name))
        lazy = {o.library for o in outcomes if fw.load_kind != "needed" or o.library.startswith("cudnn_")}
        findings += compare_outcomes(facts, host, outcomes, files, probe=probe, lazy=lazy)
    findings += _runtime_findings(maps.get("runtimes") or [], name, probe)
    return findings, passed


def _runtime_findings(runtimes: list[dict], name: str, probe: str) -> list[Finding]:
    if not runtimes:
        return []
    omp = sorted({os.path.realpath(r["path"]) for r in runtimes if r.get("api") == "openmp" and r.get("path")})
    listed = sorted({f"{r.get('vendor')} {r.get('api')}: {r.get('path')}" for r in runtimes if r.get("path")})
    out = [Finding("native-runtimes", "info", f"{name}: OpenMP / BLAS runtimes loaded: {len(listed)}",
                   {"runtimes": runtimes}, "\n".join(listed), probe)]
    if len(omp) > 1:
        out.append(Finding("openmp-runtimes-several", "warning",
                           f"{name}: {len(omp)} OpenMP runtimes in one process: {', '.join(omp)}",
                           {"paths": omp}, probe=probe))
    return out


def _first_line(text: str) -> str:
    lines = [ln for ln in (text or "").strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


# -- LD_DEBUG=libs -------------------------------------------------------------------------------------
_PID = re.compile(r"^\s*\d+:\s?")
_HWCAP_DIRS = {"tls", "haswell", "xeon_phi", "avx512_1", "x86_64", "i686", "i586", "sse2", "aarch64", "atomics",
               "asimd", "power9", "power10", "z13", "z14", "z15"}


def _base_dirs(entries: list[str]) -> list[str]:
    """Drop glibc-hwcaps / tls / platform subdirectories: keep entries no other entry is a prefix of."""
    def variant(e: str, o: str) -> bool:
        if o == e or not e.startswith(o.rstrip("/") + "/"):
            return False
        parts = e[len(o.rstrip("/")) + 1:].split("/")
        return parts[0] == "glibc-hwcaps" or all(p in _HWCAP_DIRS for p in parts)

    return [e for e in entries if not any(variant(e, o) for o in entries)]


def _trim_block(block: list[str]) -> list[str]:
    out: list[str] = []
    bases: set[str] = set()
    hidden = 0
    for line in block:
        text = line.strip()
        if text.startswith("search path="):
            raw, _, why = text[len("search path="):].partition("\t")
            entries = raw.split(":")
            kept = _base_dirs(entries)
            hidden += len(entries) - len(kept)
            bases.update(kept)
            out.append(f" search path={':'.join(kept)}  {why.strip()}")
        elif text.startswith("trying file="):
            if os.path.dirname(text[len("trying file="):]) in bases:
                out.append(f"  {text}")
        else:
            out.append(f" {text}" if not text.startswith("find library=") else text)
    if hidden:
        out.append(f" ({hidden} glibc-hwcaps/tls/platform subdirectories of these directories also tried; not shown)")
    return out


def trim_trace(stderr: str, sonames: list[str], max_lines: int = 40) -> dict[str, str]:
    """The ``find library=SONAME`` blocks of an ``LD_DEBUG=libs`` log, without pids or hwcaps noise."""
    lines = [_PID.sub("", ln, count=1) for ln in stderr.splitlines() if _PID.match(ln)]
    out: dict[str, str] = {}
    for soname in sonames:
        blocks: list[str] = []
        i = 0
        while i < len(lines):
            if lines[i].strip().startswith(f"find library={soname} "):
                block = [lines[i].rstrip()]
                j = i + 1
                while j < len(lines) and lines[j].strip() and not lines[j].strip().startswith(("find library=", "calling init")):
                    block.append(lines[j].rstrip())
                    j += 1
                trimmed = _trim_block(block)
                if not any("trying file=" in b for b in trimmed) and len(block) == 1:
                    trimmed.append(" (no search: already loaded)")
                text = "\n".join(trimmed[:max_lines])
                if text not in blocks:
                    blocks.append(text)
                i = j
            else:
                i += 1
        if blocks:
            out[soname] = "\n\n".join(blocks[-3:])
    return out


def failing_sonames(findings: list[Finding], shims: list[str]) -> list[str]:
    names: list[str] = []
    for f in findings:
        if f.severity != "error":
            continue
        text = " ".join([f.summary, f.output, str(f.evidence.get("error") or "")])
        names += _CANNOT_OPEN.findall(text)
        if _INVALID_HANDLE.search(text):
            for shim in shims:
                major = os.path.basename(shim).rsplit(".so.", 1)[-1].split(".")[0]
                names.append(f"libcudnn_graph.so.{major}")
    return list(dict.fromkeys(n for n in names if "/" not in n))


def verify(facts: Facts, host, *, timeout: float = 120, loader_trace: bool = False,
           frameworks: tuple[str, ...] | None = None, kernelspecs: tuple = (), on_probe=None) -> VerifyResult:
    """Every probe for one target; ``kernelspecs``: the Kernelspec facts that run it (each kernel is started);
    ``on_probe(what)``: told before each subprocess probe starts (the CLI shows it as progress).

    When fixdnn changed the environment's variables, each framework is probed twice: as an activated shell
    starts it, and as a plain ``env/bin/python`` (cron, IDEs) does (:mod:`fixdnn.probes.everywhere`)."""
    told = on_probe or (lambda _what: None)
    python = facts.target.python
    if not python:
        return VerifyResult(None, (Finding("no-interpreter", "error",
                                           "no interpreter for this target: probes run in the target's python "
                                           "(give --python PATH)"),))
    env = probe_environ(facts.target.prefix, host.environ)
    cwd = facts.target.cwd
    findings: list[Finding] = []
    passed: list[str] = []
    runs: list[ProbeRun] = []
    reruns: list[tuple[ProbeRun, list[Finding]]] = []
    shims = []
    for shim, subs, outcomes in cudnn_targets(facts, host):
        shims.append(shim)
        cfg = json.dumps({"library": shim, "subs": subs, "create": True})
        told(f"loading cuDNN {shim}")
        run = run_probe("cudnn", python, [cfg], probe=f"cuDNN {shim}", env=env, cwd=cwd, timeout=timeout,
                        isolated=True)
        found, ok = _cudnn_findings(facts, host, run, shim, outcomes)
        findings += found
        passed += ok
        runs.append(run)
        reruns.append((run, found))
    wanted = frameworks if frameworks is not None else tuple(f.name for f in facts.frameworks if f.name in FRAMEWORKS)
    plain = everywhere.has_changes(facts.target.prefix)
    active_facts, plain_facts = facts, facts
    if plain and wanted:  # fixdnn changed the environment: model each process as its loader sees it
        active_facts = everywhere.model_for(facts, env)
        plain_facts = everywhere.model_for(facts, everywhere.plain_model_environ(facts.target.prefix, host.environ))
    for name in dict.fromkeys(wanted):
        told(f"importing {name} and running a tiny conv2d")
        run = run_probe("framework", python, [name], probe=name, env=env, cwd=cwd, timeout=timeout)
        found, ok = _framework_findings(active_facts, host, run, name)
        findings += found
        passed += ok
        runs.append(run)
        reruns.append((run, found))
        if plain:
            label = f"{name} ({everywhere.PLAIN_LABEL})"
            told(f"importing {name} from a {everywhere.PLAIN_LABEL}")
            run = run_probe("framework", python, [name], probe=label, env=everywhere.plain_environ(host.environ),
                            cwd=cwd, timeout=timeout)
            found, ok = _framework_findings(plain_facts, host, run, name)
            findings += [replace(f, summary=f"{everywhere.PLAIN_LABEL}: {f.summary}") for f in found]
            passed += [f"{everywhere.PLAIN_LABEL}: {line}" for line in ok]
            runs.append(run)
    for spec in kernelspecs:
        told(f"starting Jupyter kernel {spec.name}")
        run = everywhere.kernel_run(python, spec, list(dict.fromkeys(wanted)), everywhere.plain_environ(host.environ),
                                    timeout)
        found, ok = everywhere.kernel_findings(run, spec)
        findings += found
        passed += ok
        runs.append(run)
    traces: dict[str, str] = {}
    if loader_trace:
        for run, found in reruns:
            sonames = failing_sonames(found, shims)
            if not sonames:
                continue
            traced = run_probe("cudnn" if run.probe.startswith("cuDNN ") else "framework", python,
                               [a for a in run.argv[4 if run.argv[1] == "-I" else 3:]],
                               probe=run.probe, env={**env, "LD_DEBUG": "libs"}, cwd=cwd, timeout=timeout,
                               isolated=run.argv[1] == "-I")
            for soname, text in trim_trace(traced.full_stderr, sonames).items():
                traces.setdefault(soname, text)
            for soname in sonames:
                traces.setdefault(soname, f"(no search for {soname} in the LD_DEBUG=libs log: it was never "
                                          "requested by name, or a library it depends on failed first)")
    return VerifyResult(python, tuple(findings), tuple(passed), tuple(runs), traces)


__all__ = ["VerifyResult", "cudnn_targets", "failing_sonames", "probe_environ", "trim_trace", "verify"]
