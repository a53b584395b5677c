"""Probes that run in subprocesses of the *target* interpreter (``fixdnn verify``).

Static diagnosis never loads a native library; these probes do, each in its own process, because a broken
cuDNN aborts the process that loads it. What a probe finds is a :class:`Finding`:

* ``_cudnn_probe.py`` loads one cuDNN copy with ctypes, calls ``cudnnGetVersion`` /
  ``cudnnGetCudartVersion`` / ``cudnnGetProperty``, loads every sub-library by path, calls ``cudnnCreate``
  and lists what the process really mapped (``/proc/self/maps``) and its OpenMP / BLAS runtimes;
* ``_framework_probe.py`` imports one framework and runs a tiny conv2d on the CPU (and the GPU when one
  exists);
* :mod:`fixdnn.probes.runner` runs them with a time limit and turns aborts, crashes and hangs into findings;
* :mod:`fixdnn.probes.compare` sets what really loaded against the loader model's prediction;
* :mod:`fixdnn.probes.suite` runs everything for one target (the ``verify`` command).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    """One thing a probe saw. ``name`` is stable kebab-case; ``output`` is the probe's own output (tail)."""

    name: str
    severity: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    probe: str = ""  # which probe: "cudnn <path>", "torch"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "severity": self.severity, "summary": self.summary, "probe": self.probe,
                "evidence": self.evidence, "output": self.output}


def script(name: str) -> str:
    """The source of a probe script (passed with ``python -c`` so sys.path[0] is the caller's cwd): the
    shared prelude, then the probe's own text."""
    here = Path(__file__).parent
    return (here / "_prelude.py").read_text(encoding="utf-8") + "\n\n" + \
        (here / f"_{name}_probe.py").read_text(encoding="utf-8")


__all__ = ["Finding", "SEVERITIES", "script"]
