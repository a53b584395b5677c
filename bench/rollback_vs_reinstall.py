"""Rollback of a pip step that replaced a 500 MB distribution vs reinstalling the old version with pip.

Both start from the same state: ``big-dist 2.0`` installed over ``big-dist 1.0`` (500 MB of random
bytes in 50 files). Baseline: ``pip install --no-index --find-links <cache> big-dist==1.0`` from the
local wheel (what a user would do by hand). Candidate: ``fixdnn.repair.transaction.rollback`` of the apply that
installed 2.0 (renames the stashed 1.0 files back). Wheels are generated once into a cache folder
(``$FIXDNN_BENCH_CACHE``, default /tmp/fixdnn-bench-cache), never into git.

    .venv/bin/python bench/rollback_vs_reinstall.py [--mb 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fixdnn.model.actions import Action, Plan  # noqa: E402
from fixdnn.repair.apply import Target, apply_plan  # noqa: E402
from fixdnn.repair.transaction import rollback  # noqa: E402
from tests.e2e.test_apply_kit import _outer_pip, build_wheel, pip_environ, site_of  # noqa: E402


def wheels(cache: Path, mb: int) -> Path:
    folder = cache / f"wheels-{mb}"
    if not (folder / ".complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for ver in ("1.0", "2.0"):
            blobs = cache / f"blobs-{mb}-{ver}"
            blobs.mkdir(exist_ok=True)
            files: dict = {"big_dist/__init__.py": f"V = {ver!r}\n".encode()}
            for i in range(50):
                blob = blobs / f"part{i}.bin"
                if not blob.exists():
                    with open(blob, "wb") as fh:
                        for _ in range(mb * 1024 // 50 // 1024):
                            fh.write(os.urandom(1 << 20))
                files[f"big_dist/data/part{i}.bin"] = blob
            build_wheel(folder, "big-dist", ver, files)
        (folder / ".complete").write_text("")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    cache = Path(os.environ.get("FIXDNN_BENCH_CACHE", "/tmp/fixdnn-bench-cache"))
    index = wheels(cache, args.mb)
    work = cache / "run"
    shutil.rmtree(work, ignore_errors=True)
    prefix = work / "env"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(prefix)
    env = pip_environ(index)
    os.environ.clear()
    os.environ.update(env, FIXDNN_STATE_DIR=str(work / "state"))
    py = prefix / "bin/python"
    target = Target(str(prefix), str(py), (str(site_of(prefix)),))
    _outer_pip(py, env, "install", "big-dist==1.0")
    base, cand = [], []
    for _ in range(args.repeat):
        # candidate: apply 2.0 (stashes 1.0), then time the rollback
        res = apply_plan(Plan((Action("pip-install", packages=("big-dist==2.0",)),)), target)
        assert res.outcome == "applied", res.reason
        t = time.perf_counter()
        rollback(str(prefix))
        cand.append(time.perf_counter() - t)
        assert "V = '1.0'" in (site_of(prefix) / "big_dist/__init__.py").read_text()
        # baseline: same starting point (2.0 over 1.0), reinstall 1.0 with pip from the local wheel
        _outer_pip(py, env, "install", "big-dist==2.0")
        t = time.perf_counter()
        _outer_pip(py, env, "install", "big-dist==1.0")
        base.append(time.perf_counter() - t)
    b, c = statistics.median(base), statistics.median(cand)
    print(f"distribution size: {args.mb} MB in 50 files; repeats: {args.repeat} (median)")
    print(f"baseline  pip reinstall of 1.0 from a local wheel: {b:8.3f} s  {[round(x, 3) for x in base]}")
    print(f"candidate fixdnn rollback (rename from the stash): {c:8.3f} s  {[round(x, 3) for x in cand]}")
    print(f"ratio: rollback is {b / c:.1f}x faster (target >= 20x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
