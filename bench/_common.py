"""Shared helpers for the benchmarks: run a command N times, take medians, read peak memory."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
FIXDNN = [sys.executable, "-c", "import sys; from fixdnn.cli import main; sys.exit(main())"]


def timed(argv, *, env=None, repeat=5, warmup=1, ok=(0, 1)) -> float:
    """Median wall time in seconds of ``argv`` (stdout discarded)."""
    samples = []
    for i in range(warmup + repeat):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode not in ok:
            raise SystemExit(f"{' '.join(map(str, argv[:4]))} failed ({proc.returncode}): {proc.stderr[-500:]}")
        if i >= warmup:
            samples.append(elapsed)
    return statistics.median(samples)


def peak_rss_mib(argv, *, env=None) -> float:
    """Peak resident memory of one run of ``argv`` in a fresh child (ru_maxrss of the waited child)."""
    code = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "PYTHONPATH", "LD_PRELOAD")}

