"""Diagnosis of an environment with 2,000 distributions vs `pip list` on it (same run, same machine).

    python bench/many_dists.py [--count 2000]

Builds a real venv (with pip) under bench/out/many-dists and writes COUNT small dist-info folders
(METADATA with a long description, RECORD, INSTALLER) plus a few DNN ones, then times both commands.
Target: fixdnn takes no more wall time than `pip list`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import FIXDNN, OUT, clean_env, peak_rss_mib, timed  # noqa: E402


def build(prefix: Path, count: int) -> Path:
    if prefix.exists():
        shutil.rmtree(prefix)
    subprocess.run([sys.executable, "-m", "venv", str(prefix)], check=True)
    python = prefix / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig;print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    description = "A synthetic distribution for fixdnn's benchmark.\n" * 200
    for i in range(count):
        name = f"pkg_{i:05d}"
        folder = site / f"{name}-1.{i % 17}.0.dist-info"
        folder.mkdir()
        (folder / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.{i % 17}.0\nRequires-Dist: requests>=2\n\n{description}")
        (folder / "INSTALLER").write_text("pip\n")
        (folder / "RECORD").write_text(f"{name}/__init__.py,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n"
                                       f"{folder.name}/RECORD,,\n")
        (site / name).mkdir()
        (site / name / "__init__.py").write_text("")
    return python


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    python = build(OUT / "many-dists", args.count)
    env = clean_env()
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    t_pip = timed([str(python), "-m", "pip", "list"], env=env, repeat=args.repeat)
    diagnose = FIXDNN + ["--python", str(python), "--json"]
    t_fixdnn = timed(diagnose, env=env, repeat=args.repeat)
    print(f"environment: {args.count} distributions")
    print(f"baseline  pip list         : {t_pip * 1000:7.0f} ms (median)")
    print(f"fixdnn    diagnosis --json : {t_fixdnn * 1000:7.0f} ms (median)")
    print(f"ratio fixdnn / pip list = {t_fixdnn / t_pip:.3f}  (target <= 1.000)")
    print(f"fixdnn peak RSS = {peak_rss_mib(diagnose, env=env):.0f} MiB")
    return 0 if t_fixdnn <= t_pip else 1


if __name__ == "__main__":
    sys.exit(main())
