"""Start-up cost of the commands a shell runs often, side by side with ``python -c pass``.

``fixdnn --version`` and ``fixdnn hook bash`` (run by every new shell that evals the hook) against the
same interpreter doing nothing, measured alternately (one run of each per round, so load on the machine
hits all of them alike), medians of ``--rounds`` rounds. ``fixdnn --help`` (the typer path every other
command takes) is shown for context. Goals (issue 13): --version <= 4x, hook bash <= 2.5x.

    python bench/startup.py [--rounds 41]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import clean_env  # noqa: E402

GOALS = {"fixdnn --version": 4.0, "fixdnn hook bash": 2.5}


def _once(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr[-300:]!r}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=41)
    args = parser.parse_args()
    script = Path(sys.executable).parent / "fixdnn"  # the console script users run
    if not script.exists():
        raise SystemExit(f"{script} not found: install fixdnn into this interpreter's environment first")
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "fixdnn --version": [str(script), "--version"],
        "fixdnn hook bash": [str(script), "hook", "bash"],
        "fixdnn --help": [str(script), "--help"],
    }
    env = clean_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    for argv in commands.values():  # warm the page cache and the bytecode caches
        _once(argv, env)
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, argv in commands.items():
            samples[name].append(_once(argv, env))
    base = statistics.median(samples["python -c pass"])
    print(f"{args.rounds} alternating rounds, medians; {os.cpu_count()} CPUs; {sys.version.split()[0]}")
    print(f"| command | median | ratio to `python -c pass` | goal |\n|---|---:|---:|---:|")
    failed = False
    for name, values in samples.items():
        med = statistics.median(values)
        goal = GOALS.get(name)
        ratio = med / base
        failed |= goal is not None and ratio > goal
        print(f"| `{name}` | {med * 1000:.1f} ms | {ratio:.2f}x | {f'<= {goal}x' if goal else ''} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
