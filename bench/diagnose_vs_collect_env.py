"""Static diagnosis of a real torch CUDA environment vs `python -m torch.utils.collect_env` in it.

    python bench/diagnose_vs_collect_env.py [--env DIR]

DIR is a venv holding the real torch CUDA wheel and its nvidia-* wheels (gigabytes). Without --env one is
created under bench/out/torch-cuda with `pip install torch==VERSION` through the machine's own pip
configuration (set FIXDNN_BENCH_TORCH to choose the version). Target: fixdnn takes at most 1/5 of
collect_env's wall time, and stays under 100 MiB of memory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FIXDNN, OUT, clean_env, peak_rss_mib, timed  # noqa: E402


def ensure_env(path: Path) -> Path:
    python = path / "bin" / "python"
    if python.exists():
        return python
    version = os.environ.get("FIXDNN_BENCH_TORCH", "2.14.1")
    print(f"creating {path} with torch=={version} (a few GB, once)...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"torch=={version}"], check=True)
    return python


def size_gib(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total / 2**30


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", type=Path, default=OUT / "torch-cuda")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    python = ensure_env(args.env)
    env = clean_env()
    diagnose = FIXDNN + ["--python", str(python), "--json"]
    collect = [str(python), "-m", "torch.utils.collect_env"]
    t_fixdnn = timed(diagnose, env=env, repeat=args.repeat)
    t_collect = timed(collect, env=env, repeat=max(3, args.repeat // 2))
    rss = peak_rss_mib(diagnose, env=env)
    with tempfile.TemporaryDirectory() as state:  # first diagnosis ever: the libraries that would load are hashed
        cold_env = {**env, "XDG_STATE_HOME": state}
        start = time.perf_counter()
        cold_rss = peak_rss_mib(diagnose, env=cold_env)
        cold_s = time.perf_counter() - start
    print(f"environment: {args.env} ({size_gib(args.env):.1f} GiB)")
    print(f"baseline  python -m torch.utils.collect_env : {t_collect * 1000:8.0f} ms (median)")
    print(f"fixdnn    static diagnosis (--json)          : {t_fixdnn * 1000:8.0f} ms (median)")
    print(f"ratio fixdnn / collect_env = {t_fixdnn / t_collect:.3f}  (target <= 0.200)")
    print(f"fixdnn peak RSS = {rss:.0f} MiB  (target < 100 MiB)")
    print(f"first diagnosis (empty state dir, hashes the libraries that would load): {cold_s:.1f} s, peak RSS {cold_rss:.0f} MiB")
    return 0 if t_fixdnn / t_collect <= 0.2 and max(rss, cold_rss) < 100 else 1


if __name__ == "__main__":
    sys.exit(main())
