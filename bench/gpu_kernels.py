"""What reading the CUDA fat binaries of a real torch wheel costs a diagnosis.

    python bench/gpu_kernels.py [--env DIR] [--repeat 5]

DIR (default: $FIXDNN_REALENV) is a venv holding the real torch CUDA wheel. In the same run, each in a fresh
child process with its own empty state folder:

* baseline: a warm diagnosis (``fixdnn.facts.gather``, caches filled by a first run) with the kernel table
  emptied, so no fat binary is looked at;
* fixdnn: the same warm diagnosis reading torch's fat binaries (answered by the cache by file identity);
* cold read: ``fixdnn.facts.fatbin.read`` of every torch library, no cache (what the first diagnosis pays).

Targets (issue 18): the warm diagnosis costs at most 0.1 s more than the baseline; peak memory <= 100 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import dataclasses, glob, json, os, resource, statistics, sys, time
import fixdnn.facts as F
from fixdnn.base import filecache
from fixdnn.facts import fatbin, gather, loads
from fixdnn.knowledge import compat as compat_mod
from fixdnn.target.host import Host
from fixdnn.target.interpreter import TargetSpec

mode, python, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
host = Host(system="/")
out = {}
if mode == "cold":
    site = glob.glob(python.rsplit("/bin/", 1)[0] + "/lib/python*/site-packages/torch/lib")[0]
    start = time.perf_counter()
    found = [fatbin.read(host, f) for f in sorted(glob.glob(site + "/*.so"))]
    out["seconds"] = time.perf_counter() - start
    out["entries"] = sum(k.entries for k in found)
    out["bytes"] = sum(os.path.getsize(k.path) for k in found if k.entries)
else:
    compat = compat_mod.load()
    bare = dataclasses.replace(compat, gpu=dataclasses.replace(compat.gpu, kernels={}))
    facts = gather(host, TargetSpec(python=python), compat)  # fills the caches (integrity, fat binaries)
    start = time.perf_counter()
    facts = gather(host, TargetSpec(python=python), compat)
    out["diagnosis"] = time.perf_counter() - start
    out["kernels"] = [list(k.sass) for k in facts.gpu.kernels]
    env = loads.loader_env(host, facts.target)
    side = {"with": [], "without": []}
    for _ in range(repeat):  # the GPU side alone, alternating, each from a fresh process-level memo
        for name, tables in (("with", compat), ("without", bare)):
            filecache._MEMO.clear()
            start = time.perf_counter()
            F._gpu_side(host, facts.target, facts.frameworks, facts.distributions, env, tables, False)
            side[name].append(time.perf_counter() - start)
    out["with"] = statistics.median(side["with"])
    out["without"] = statistics.median(side["without"])
out["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child(mode: str, python: str, repeat: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="fixdnn-bench-state-") as state:
        env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "PYTHONPATH", "LD_PRELOAD")}
        env["FIXDNN_STATE_DIR"] = state
        env.pop("FIXDNN_SYSTEM_ROOT", None)
        proc = subprocess.run([sys.executable, "-c", _CHILD, mode, python, str(repeat)], capture_output=True,
                              text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed: {proc.stderr[-1000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default=os.environ.get("FIXDNN_REALENV"))
    ap.add_argument("--repeat", type=int, default=21)
    args = ap.parse_args()
    if not args.env:
        raise SystemExit("give --env DIR (or FIXDNN_REALENV): a venv with the real torch CUDA wheel")
    python = str(Path(args.env) / "bin" / "python")
    warm = child("warm", python, args.repeat)
    cold = [child("cold", python, 1) for _ in range(3)]
    cold_s = statistics.median(c["seconds"] for c in cold)
    print(f"torch libraries with kernels: {cold[0]['bytes'] / 2**20:.0f} MiB, {cold[0]['entries']} fat binary entries")
    print(f"kernels read: {warm['kernels']}")
    print(f"warm diagnosis (context): {warm['diagnosis']:.3f} s, peak RSS {warm['rss_mib']:.0f} MiB")
    print(f"GPU side of a warm diagnosis, median of {args.repeat}: without kernels {warm['without'] * 1000:.1f} ms, "
          f"with kernels {warm['with'] * 1000:.1f} ms: {(warm['with'] - warm['without']) * 1000:+.1f} ms "
          f"(= {(warm['with'] - warm['without']) / warm['diagnosis'] * 100:.2f} % of the warm diagnosis; target <= +100 ms)")
    print(f"cold fat binary read (first diagnosis, no cache): {cold_s * 1000:.0f} ms, peak RSS "
          f"{max(c['rss_mib'] for c in cold):.0f} MiB (target <= 100 MiB)")


if __name__ == "__main__":
    main()
