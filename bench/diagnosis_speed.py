"""Diagnosis speed (issue 16): each row side by side with its anchor, alternating runs, medians.

    python bench/diagnosis_speed.py --env DIR [--repeat 5] [--uv PATH] [--rows warm,metadata,cold,dists]

DIR is a venv with the real torch CUDA wheels. It is never written: the script works on a hard-linked
copy (``cp -al`` under $TMPDIR, removed at the end), whose files it only chmods and links. Rows:

- warm: ``fixdnn --python COPY --json`` with its state from an earlier run, vs
  ``COPY/bin/python -m torch.utils.collect_env``;
- metadata: the same, but before each fixdnn sample every file of the copy is chmod'ed and given a new
  hard link (content unchanged, change time moved), vs collect_env;
- cold: the first diagnosis ever (an empty state folder each sample; the page cache is warm), vs collect_env;
- dists: a venv with 2,000 small distributions (bench/many_dists.py builds it), vs ``uv pip list``
  (``--uv``: a uv binary, e.g. pip-installed into a throwaway venv) and ``pip list``.

Every fixdnn sample's peak RSS is read from wait4(); the largest is printed (target <= 100 MiB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import FIXDNN, OUT, clean_env  # noqa: E402


def sample(argv, env) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of one run."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"{' '.join(map(str, argv[:5]))} exited {code}")
    return wall, usage.ru_maxrss / 1024


def alternate(a, b, repeat: int, before_a=None, before_b=None) -> tuple[list, list]:
    """Run a and b alternately (one warm-up each), ``repeat`` samples of each."""
    out_a, out_b = [], []
    for i in range(repeat + 1):
        if before_a:
            before_a(i)
        ra = sample(*a)
        if before_b:
            before_b(i)
        rb = sample(*b)
        if i:
            out_a.append(ra)
            out_b.append(rb)
    return out_a, out_b


def med(samples) -> float:
    return statistics.median(s[0] for s in samples)


def touch_metadata(root: Path, links: Path, i: int) -> None:
    """chmod every file and give it one more hard link: what cp -al, chmod -R and chown do to an env."""
    shutil.rmtree(links, ignore_errors=True)
    links.mkdir()
    mode = 0o644 if i % 2 else 0o664
    n = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                continue
            os.chmod(path, mode | (os.stat(path).st_mode & 0o111))
            os.link(path, links / str(n))
            n += 1


def row(name, fixdnn_s, anchor_s, anchor_name, goal) -> str:
    return (f"| {name} | {med(fixdnn_s):.3f} s | {anchor_name} {med(anchor_s):.3f} s | "
            f"{med(fixdnn_s) / med(anchor_s):.3f}x | {goal} |")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", type=Path, required=True)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--uv", type=Path, default=None)
    parser.add_argument("--rows", default="warm,metadata,cold,dists")
    args = parser.parse_args()
    rows = set(args.rows.split(","))
    env = clean_env()
    lines, peaks = [], []
    work = Path(tempfile.mkdtemp(prefix="fixdnn-bench-"))
    try:
        copy = work / "env"
        subprocess.run(["cp", "-al", str(args.env), str(copy)], check=True)
        python = str(copy / "bin" / "python")
        state = work / "state"
        warm_env = {**env, "XDG_STATE_HOME": str(state)}
        diagnose = FIXDNN + ["--python", python, "--json"]
        collect = ([python, "-m", "torch.utils.collect_env"], env)
        sample(diagnose, warm_env)  # the state the warm rows start from
        if "warm" in rows:
            f, c = alternate((diagnose, warm_env), collect, args.repeat)
            peaks += [s[1] for s in f]
            lines.append(row("warm diagnosis", f, c, "collect_env", "<= 0.1x"))
        if "metadata" in rows:
            links = work / "links"
            f, c = alternate((diagnose, warm_env), collect, args.repeat,
                             before_a=lambda i: touch_metadata(copy, links, i))
            peaks += [s[1] for s in f]
            lines.append(row("after chmod + hard link of every file", f, c, "collect_env", "same as warm"))
        if "cold" in rows:
            cold_env = dict(warm_env)

            def fresh(i):
                cold_env["XDG_STATE_HOME"] = tempfile.mkdtemp(dir=work)

            f, c = alternate((diagnose, cold_env), collect, args.repeat, before_a=fresh)
            peaks += [s[1] for s in f]
            lines.append(row("first (cold) diagnosis", f, c, "collect_env", "<= 0.5x"))
        if "dists" in rows:
            many = OUT / "many-dists"
            if not (many / "bin" / "python").exists():
                subprocess.run([sys.executable, str(Path(__file__).with_name("many_dists.py")), "--repeat", "1"],
                               check=False, stdout=subprocess.DEVNULL)
            mpy = str(many / "bin" / "python")
            menv = {**env, "XDG_STATE_HOME": str(state), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
            d = (FIXDNN + ["--python", mpy, "--json"], menv)
            if args.uv:
                f, c = alternate(d, ([str(args.uv), "pip", "list", "--python", mpy], menv), args.repeat)
                peaks += [s[1] for s in f]
                lines.append(row("2,000 distributions", f, c, "uv pip list", "<= 3x"))
            f, c = alternate(d, ([mpy, "-m", "pip", "list"], menv), args.repeat)
            peaks += [s[1] for s in f]
            lines.append(row("2,000 distributions", f, c, "pip list", ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("| measure | fixdnn | anchor | ratio | goal |\n|---|---|---|---|---|")
    print("\n".join(lines))
    print(f"peak RSS of every fixdnn sample: max {max(peaks):.0f} MiB (target <= 100 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
