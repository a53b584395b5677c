"""The default test run against the same run at a baseline commit, side by side (issue 14's measure).

    python bench/suite_speed.py --baseline 8da0372 [--repeat 2] [--cold]

Checks the baseline out into bench/out/suite-<rev> (a git worktree with its own venv and the test extra,
made once), then alternates ``python -m pytest -q`` there and here, and reports the wall time and the CPU
time of each whole run (the pytest process and every child it waited for) with the ratio of medians.
CPU time is the figure that depends least on what else the machine does. A red run stops the benchmark.

``--cold`` gives every run empty caches of its own (``FIXDNN_TEST_CACHE``, ``FIXDNN_ELFKIT_CACHE``): the first
run on a fresh machine, which builds the libraries, fat binaries, wheels and template venvs, as each CI pass
does. Without it both sides keep their caches between runs, as a developer's machine does.
"""

from __future__ import annotations

import argparse
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import OUT, clean_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def checkout(rev: str) -> Path:
    """A worktree of ``rev`` with a venv holding it and its test extra (reused when already there)."""
    folder = OUT / f"suite-{rev}"
    python = folder / ".venv/bin/python"
    if not python.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--force", "--detach", str(folder), rev],
                       check=True, capture_output=True)
        subprocess.run([sys.executable, "-m", "venv", str(folder / ".venv")], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", ".[test]"], cwd=folder, check=True)
    return folder


def run_suite(folder: Path, cold: bool = False) -> tuple[float, float, str]:
    """(wall s, CPU s, pytest's summary line) of one default run in ``folder``; ``cold``: with empty caches."""
    env = clean_env()
    caches = Path(tempfile.mkdtemp(prefix="cold-", dir=OUT)) if cold else None
    if caches:
        env.update(FIXDNN_TEST_CACHE=str(caches / "tests"), FIXDNN_ELFKIT_CACHE=str(caches / "elfkit"))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([str(folder / ".venv/bin/python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if caches:
        shutil.rmtree(caches, ignore_errors=True)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = next((ln for ln in reversed(proc.stdout.splitlines()) if re.search(r"\d+ passed", ln)), "")
    if proc.returncode != 0:
        raise SystemExit(f"the suite failed in {folder}: {summary or proc.stdout[-500:]}")
    return wall, cpu, summary.strip("= ")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="the commit to compare with (e.g. 8da0372)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--cold", action="store_true", help="every run with empty caches (a fresh machine, a CI pass)")
    args = ap.parse_args()
    sides = {"baseline": checkout(args.baseline), "current": ROOT}
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in sides}
    for round_ in range(1, args.repeat + 1):
        for name, folder in sides.items():  # alternate, so a slower stretch of the machine hits both
            wall, cpu, summary = run_suite(folder, args.cold)
            samples[name].append((wall, cpu))
            print(f"round {round_} {name:8} wall {wall:6.1f} s  CPU {cpu:6.1f} s  ({summary})", flush=True)
    med = {name: (statistics.median(w for w, _ in s), statistics.median(c for _, c in s))
           for name, s in samples.items()}
    (bw, bc), (cw, cc) = med["baseline"], med["current"]
    print(f"median wall: baseline {bw:.1f} s, current {cw:.1f} s, ratio {cw / bw:.2f}x")
    print(f"median CPU:  baseline {bc:.1f} s, current {cc:.1f} s, ratio {cc / bc:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
