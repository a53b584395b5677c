"""Start-up cost of the in-process repair's ``.pth`` line: interpreter start with and without it.

Three identical venvs (``python -m venv --without-pip``): ``plain``; ``empty``, whose ``.pth`` imports an
empty module (the cheapest a ``.pth`` import can be: the named baseline for the hook's own cost); ``hooked``,
with fixdnn's in-process hook (``fixdnn.shell.install`` with one variable change and one preload entry, as
a repair writes it). Runs ``env/bin/python -c pass`` round-robin over the three (so drift in machine load
hits all alike), N times each, and reports medians and minimums, differences and ratios. Then
``-X importtime`` gives the module's import time inside the interpreter (no process-start noise), hook
against the empty module.

    python bench/pth_startup.py [--runs 200]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixdnn.shell.envfile import EnvFile, EnvOp, Preload  # noqa: E402
from fixdnn.shell.install import install  # noqa: E402
from fixdnn.shell.preload import HOOK_MODULE  # noqa: E402


def _once(python: Path, env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds user+sys) of one start; CPU time is what a loaded machine disturbs least."""
    start = time.perf_counter()
    proc = subprocess.Popen([str(python), "-c", "pass"], env=env)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{python} failed to start ({proc.returncode})")
    return wall, usage.ru_utime + usage.ru_stime


def import_time_us(python: Path, env: dict[str, str], module: str, runs: int = 30) -> tuple[float, float]:
    """(median, min) cumulative import time of ``module`` reported by ``-X importtime``, in µs."""
    samples = []
    for _ in range(runs):
        err = subprocess.run([str(python), "-X", "importtime", "-c", "pass"], env=env, capture_output=True,
                             text=True, check=True).stderr
        m = re.search(rf"import time:\s+\d+ \|\s+(\d+) \|\s+{module}\s*$", err, re.M)
        if not m:
            raise SystemExit(f"{module} was not imported at start-up: is its .pth in place?")
        samples.append(int(m.group(1)))
    return statistics.median(samples), min(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    with tempfile.TemporaryDirectory() as tmp:
        plain, empty, hooked = Path(tmp, "plain"), Path(tmp, "empty"), Path(tmp, "hooked")
        for prefix in (plain, empty, hooked):
            venv.EnvBuilder(with_pip=False, symlinks=True).create(prefix)
        site = next(empty.glob("lib/python*/site-packages"))
        (site / "_bench_empty.py").write_text("")
        (site / "bench-empty.pth").write_text("import _bench_empty\n")
        lib = Path(tmp, "libstub.so.1")
        lib.write_bytes(b"\x7fELF")  # never loaded: nothing imports a framework here
        install(hooked, EnvFile((EnvOp("set", "CUDA_MODULE_LOADING", "LAZY", reason="bench"),),
                                (Preload(str(lib), reason="bench"),)))
        py = {"plain": plain / "bin/python", "empty": empty / "bin/python", "hooked": hooked / "bin/python"}
        for _ in range(5):  # warm the page cache and the bytecode of both
            for p in py.values():
                _once(p, env)
        times: dict[str, list[float]] = {name: [] for name in py}
        cpu: dict[str, list[float]] = {name: [] for name in py}
        for _ in range(args.runs):
            for name, p in py.items():
                wall, used = _once(p, env)
                times[name].append(wall)
                cpu[name].append(used)
        imp = {"empty": import_time_us(py["empty"], env, "_bench_empty"),
               "hooked": import_time_us(py["hooked"], env, HOOK_MODULE)}
    print(f"python {sys.version.split()[0]}, {args.runs} round-robin runs each of 'env/bin/python -c pass'")
    base_med, base_min = statistics.median(times["plain"]), min(times["plain"])
    for name in py:
        med, low = statistics.median(times[name]), min(times[name])
        print(f"  {name:<7} median {med * 1000:7.2f} ms ({(med - base_med) * 1000:+.3f} ms, {med / base_med:.3f}x)"
              f"   min {low * 1000:7.2f} ms ({(low - base_min) * 1000:+.3f} ms, {low / base_min:.3f}x)")
    cpu_base = statistics.median(cpu["plain"])
    for name in py:
        med = statistics.median(cpu[name])
        print(f"  {name:<7} CPU median {med * 1000:7.2f} ms ({(med - cpu_base) * 1000:+.3f} ms, {med / cpu_base:.3f}x)")
    (e_med, e_min), (h_med, h_min) = imp["empty"], imp["hooked"]
    print(f"  -X importtime: {HOOK_MODULE} median {h_med:.0f} us / min {h_min:.0f} us; empty module median "
          f"{e_med:.0f} us / min {e_min:.0f} us; ratio (min) {h_min / max(e_min, 1):.2f}x")


if __name__ == "__main__":
    main()
