"""What really loaded (a probe's ``/proc/self/maps``) against the loader model's prediction.

The loader model (:mod:`fixdnn.facts.loader`, :mod:`fixdnn.facts.loads`) predicts, per framework, which file each
cuDNN / CUDA library resolves to. A probe process reports the files it really mapped. Any difference is a
finding: either the environment does something the model does not know (a ``.pth`` or ``sitecustomize``
preloading another copy, an ``LD_PRELOAD``...) or the model is wrong; either way the static diagnosis
cannot be trusted for that library.
"""

from __future__ import annotations

import os
import re

from fixdnn.model.facts import Facts, LoadOutcome
from fixdnn.probes import Finding

_FAMILY = re.compile(r"^lib(cudnn(?:_[a-z_]+)?|cudart|cublasLt|cublas|nvrtc)\.so")


def family_of(facts: Facts, path: str) -> str | None:
    copy = facts.copy_at(path)
    if copy is not None:
        return copy.family
    m = _FAMILY.match(os.path.basename(path))
    return m.group(1) if m else None


def decode_cudnn(value: int) -> tuple[int, int, int]:
    """cudnnGetVersion's integer: 92400 -> (9, 24, 0); 8907 -> (8, 9, 7)."""
    if value >= 90000:
        return value // 10000, value // 100 % 100, value % 100
    return value // 1000, value // 100 % 10, value % 100


def _real(host, path: str) -> str:
    try:
        return host.realpath(path)
    except Exception:  # noqa: BLE001 - a path we cannot resolve is compared as written
        return path


def mapped_by_family(facts: Facts, files: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in files:
        fam = family_of(facts, f)
        if fam is not None:
            out.setdefault(fam, []).append(f)
    return out


def compare_outcomes(facts: Facts, host, outcomes: list[LoadOutcome], files: list[str], *, probe: str,
                     lazy: set[str] = frozenset()) -> list[Finding]:
    """Findings for each predicted library whose really-mapped file differs.

    ``lazy``: families the process may legitimately not have loaded yet (dlopen()ed on first use); their
    absence is not a difference.
    """
    mapped = mapped_by_family(facts, files)
    findings = []
    for o in outcomes:
        seen = mapped.get(o.library, [])
        chain = list(o.preload) + o.resolution.explain()
        if o.path is None:
            if seen:
                findings.append(Finding(
                    "load-differs-from-model", "warning",
                    f"{o.soname}: the loader model says {o.framework} cannot load it, but the process mapped "
                    f"{', '.join(seen)}", {"framework": o.framework, "soname": o.soname, "predicted": None,
                                           "loaded": seen, "chain": chain}, probe=probe))
            continue
        want = _real(host, o.path)
        if not seen:
            if o.library not in lazy:
                findings.append(Finding(
                    "load-differs-from-model", "warning",
                    f"{o.soname}: the loader model predicts {o.path}, but the {o.framework} process did not load it",
                    {"framework": o.framework, "soname": o.soname, "predicted": o.path, "loaded": [],
                     "chain": chain}, probe=probe))
            continue
        if want in seen or o.path in seen:
            continue
        # Same file content by version (two identical wheels) is a warning; another or an unknown copy an error.
        copies = [facts.copy_at(p) for p in [want, *seen]]
        versions = {c.version if c is not None else None for c in copies}
        severity = "warning" if len(versions) == 1 and None not in versions and len(seen) == 1 else "error"
        findings.append(Finding(
            "load-differs-from-model", severity,
            f"{o.soname}: the loader model predicts {o.path}, but the {o.framework} process loaded "
            f"{', '.join(seen)}", {"framework": o.framework, "soname": o.soname, "predicted": o.path,
                                   "predicted_realpath": want, "loaded": seen, "chain": chain}, probe=probe))
    return findings


def compare_version(facts: Facts, shim: str, value: int, files: list[str], *, probe: str) -> list[Finding]:
    """cudnnGetVersion answers for the *graph* sub-library: a different minor than the copy's own files say
    means the shim and its sub-libraries come from different installs."""
    copy = facts.copy_at(shim)
    got = decode_cudnn(value)
    if copy is None or not copy.version:
        return []
    try:
        have = tuple(int(x) for x in copy.version.split(".")[:2])
    except ValueError:
        return []
    if tuple(got[:2]) == have[:2]:
        return []
    graph = [f for f in files if os.path.basename(f).startswith("libcudnn_graph.so")]
    return [Finding(
        "cudnn-version-differs", "error",
        f"{shim} is cuDNN {copy.version} by its files ({copy.version_source or 'metadata'}), but cudnnGetVersion() "
        f"returns {value} ({'.'.join(map(str, got))}): the answer comes from libcudnn_graph"
        + (f" at {graph[0]}" if graph else "") + ", so the shim and its sub-libraries are from different copies",
        {"path": shim, "static_version": copy.version, "runtime_version": value, "graph": graph[:1]},
        probe=probe)]


__all__ = ["compare_outcomes", "compare_version", "decode_cudnn", "family_of", "mapped_by_family"]
