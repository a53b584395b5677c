"""What planning adds to an offline diagnosis (same run, same environment).

    python bench/plan_overhead.py [--repeat 7]

Builds a synthetic torch cu13 venv (tests/envkit: gcc-built libraries, real dist-info) with three problems
(an older cuDNN preloaded from PYTHONPATH, a missing cuDNN sub-library, an oversubscribing OMP_NUM_THREADS),
then times, in one run:

* the baseline: ``fixdnn --python ENV --offline`` (the diagnosis), and
* ``fixdnn --python ENV --offline --dry-run`` (diagnosis + rules load + context + plan + availability
  check, which offline and without pip in the target is a local look-up),

as median wall times of fresh processes, plus the in-process cost of the planning steps alone against
``gather + diagnose``. Target: planning adds less than 20 % to the offline diagnosis.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import FIXDNN, OUT, clean_env, timed  # noqa: E402


def build(root: Path):
    from tests.envkit.env import EnvBuilder

    if root.exists():
        shutil.rmtree(root)
    env = EnvBuilder(root / "venv").torch_cuda13()
    (env.cudnn_lib / "libcudnn_cnn.so.9").unlink()
    other = EnvBuilder(root / "other", real_python=False)
    other.add_cudnn_wheel("9.13.0.50", 13, dist=False)
    return env, other.site


def in_process(python: Path, environ: dict, repeat: int) -> tuple[float, float]:
    from fixdnn.facts import gather
    from fixdnn.knowledge import compat as compat_mod
    from fixdnn.plan import context as context_mod
    from fixdnn.plan.availability import Availability
    from fixdnn.plan.build import plan
    from fixdnn.symptoms.registry import diagnose, load_rules
    from fixdnn.target.host import Host
    from fixdnn.target.interpreter import TargetSpec

    diag, planning, context, proving = [], [], [], []
    for _ in range(repeat):
        host = Host(environ=environ)
        t0 = time.perf_counter()
        facts = gather(host, TargetSpec(python=str(python)))
        symptoms = diagnose(facts, compat_mod.load())
        t1 = time.perf_counter()
        rules = load_rules(include_user=False)
        ctx = context_mod.build(facts, host, offline=True, compat=compat_mod.load())
        tc = time.perf_counter()
        result = plan(symptoms, ctx, rules, compat_mod.load(), facts=facts, availability=Availability(host, ctx))
        t2 = time.perf_counter()
        plan(symptoms, ctx, rules, compat_mod.load())  # the same plan, nothing proven: what proving adds
        t3 = time.perf_counter()
        assert result.actions, "the benchmark environment should need a plan"
        diag.append(t1 - t0)
        planning.append(t2 - t1)
        context.append(tc - t1)
        proving.append((t2 - tc) - (t3 - t2))
    m = statistics.median
    return m(diag), m(planning), m(context), m(proving)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    env, shadow = build(OUT / "plan-overhead")
    environ = clean_env()
    environ = {k: v for k, v in environ.items() if not k.startswith("PIP_")}
    environ.update({"PYTHONPATH": f"{Path(__file__).resolve().parents[1]}:{shadow}", "OMP_NUM_THREADS": "512",
                    "PIP_CONFIG_FILE": os.devnull, "XDG_STATE_HOME": str(OUT / "plan-overhead" / "state"),
                    "XDG_CONFIG_HOME": str(OUT / "plan-overhead" / "config")})
    base = [*FIXDNN, "--python", str(env.python), "--offline"]
    diag = timed(base, env=environ, repeat=args.repeat)
    dry = timed([*base, "--dry-run"], env=environ, repeat=args.repeat)
    d_in, p_in, c_in, proof_in = in_process(env.python, environ, args.repeat)
    print(f"offline diagnosis (process)      {diag * 1000:8.1f} ms")
    print(f"offline diagnosis + --dry-run    {dry * 1000:8.1f} ms   ratio {dry / diag:.2f}x "
          f"(+{(dry / diag - 1) * 100:.1f} %)")
    print(f"in process: gather+diagnose      {d_in * 1000:8.1f} ms")
    print(f"in process: rules+context+plan (proven in the model)+check {p_in * 1000:8.1f} ms   ratio {p_in / d_in:.2f} "
          f"(+{p_in / d_in * 100:.1f} %)")
    print(f"  of which the planning context (pip config files, uv)   {c_in * 1000:8.1f} ms")
    print(f"  of which proving every candidate in the model {proof_in * 1000:8.1f} ms   "
          f"(+{proof_in / d_in * 100:.1f} % of gather+diagnose)")
    print("target: planning adds < 20 %:", "met" if dry / diag < 1.2 else "NOT met")


if __name__ == "__main__":
    main()
