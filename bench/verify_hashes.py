"""Benchmark: verifying a real ~1 GB wheel's files (install-corrupted) against `sha256sum` over the same files.

    python bench/verify_hashes.py [--wheel PATH] [--repeat N] [--keep DIR]

Unpacks the real nvidia-cudnn-cu13 wheel (with its dist-info and RECORD) into a temporary site dir on
disk, then measures in the same run, for each repetition:

* baseline: ``sha256sum`` over every file RECORD lists with a hash (one process, one core);
* fixdnn cold: ``fixdnn.facts.integrity.gather`` with an empty state directory (every file hashed);
* fixdnn warm: the same again (the hash cache answers; nothing is read but RECORD and stat()).
* for context only: ``openssl dgst -sha256`` (one core, the same SHA code as hashlib), because coreutils'
  ``sha256sum`` may lack the SHA-NI instructions OpenSSL uses and then is CPU-bound.

Before the baseline and the cold run the page cache is dropped (``sync; echo 3 > /proc/sys/vm/drop_caches``)
when we may; otherwise both run with a warm page cache, and the output says so.

Targets: cold <= 1.2x sha256sum; warm <= 5% of cold. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

WHEEL = "/opt/pypi-more/files/nvidia_cudnn_cu13-9.24.0.43-py3-none-manylinux_2_27_x86_64.whl"


def drop_caches() -> bool:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    except OSError:
        return False


def unpack(wheel: Path, site: Path) -> list[Path]:
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    record = next(site.glob("*.dist-info")) / "RECORD"
    files = []
    for line in record.read_text().splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[1]:
            files.append(site / parts[0])
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wheel", default=WHEEL)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--keep", help="unpack here and keep it (default: a temporary folder, removed)")
    args = ap.parse_args()
    wheel = Path(args.wheel)
    if not wheel.is_file():
        print(f"SKIP: the wheel {wheel} is not here; give one with --wheel PATH")
        return 0
    if shutil.which("sha256sum") is None:
        print("SKIP: no sha256sum on PATH for the baseline")
        return 0

    from fixdnn.facts import distributions, integrity
    from fixdnn.model.facts import TargetInfo
    from fixdnn.target.host import Host

    # on disk, not in a tmpfs /tmp: a cold read must really read
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="fixdnn-bench-", dir="/var/tmp"))
    try:
        prefix = work / "env"
        site = prefix / "lib/python3.11/site-packages"
        site.mkdir(parents=True, exist_ok=True)
        files = unpack(wheel, site) if not any(site.glob("*.dist-info")) else unpack_list(site)
        total = sum(f.stat().st_size for f in files)
        biggest = max(f.stat().st_size for f in files)
        print(f"{wheel.name}: {len(files)} files with a hash, {total / 1e9:.2f} GB (largest {biggest / 1e6:.0f} MB); "
              f"{os.cpu_count()} CPUs, {integrity._workers()} hashing threads")
        target = TargetInfo(python=None, python_version=None, prefix=str(prefix), base_prefix=str(prefix),
                            kind="venv", site_dirs=(str(site),))

        def fixdnn_run(state: Path) -> tuple[float, int]:
            host = Host(environ={"XDG_STATE_HOME": str(state), "HOME": str(state)})
            before = integrity.HASH_CALLS
            t = time.perf_counter()
            dists, _ = distributions.gather(host, target.site_dirs)
            checks, unknowns = integrity.gather(host, target, dists)
            elapsed = time.perf_counter() - t
            item = checks[0]
            assert item.bad_count == 0 and item.checked == len(files), (item, unknowns)
            return elapsed, integrity.HASH_CALLS - before

        rows = []
        cold_page = True
        for i in range(args.repeat):
            cold_page &= drop_caches()
            t = time.perf_counter()
            subprocess.run(["sha256sum", "--", *map(str, files)], check=True, stdout=subprocess.DEVNULL)
            base = time.perf_counter() - t
            state = work / f"state{i}"
            shutil.rmtree(state, ignore_errors=True)
            cold_page &= drop_caches()
            cold, hashed_cold = fixdnn_run(state)
            warm, hashed_warm = fixdnn_run(state)
            ossl = float("nan")
            if shutil.which("openssl"):
                cold_page &= drop_caches()
                t = time.perf_counter()
                subprocess.run(["openssl", "dgst", "-sha256", *map(str, files)], check=True, stdout=subprocess.DEVNULL)
                ossl = time.perf_counter() - t
            rows.append((base, cold, warm, hashed_cold, hashed_warm, ossl))
            print(f"  run {i + 1}: sha256sum {base:.3f} s | fixdnn cold {cold:.3f} s ({hashed_cold} files hashed) | "
                  f"fixdnn warm {warm * 1000:.1f} ms ({hashed_warm} hashed)")
        base = min(r[0] for r in rows)
        cold = min(r[1] for r in rows)
        warm = min(r[2] for r in rows)
        page = "page cache dropped before each cold run" if cold_page else "WARM page cache (could not drop it)"
        print(f"best of {args.repeat} ({page}):")
        print(f"  sha256sum  {base:.3f} s  ({total / base / 1e6:.0f} MB/s)")
        ossl = min(r[5] for r in rows)
        if ossl == ossl:
            print(f"  (for context: openssl dgst -sha256, one core, {ossl:.3f} s = {total / ossl / 1e6:.0f} MB/s; "
                  f"fixdnn cold = {cold / ossl:.2f}x of it)")
        print(f"  fixdnn cold {cold:.3f} s  = {cold / base:.2f}x sha256sum   (target <= 1.20x)")
        print(f"  fixdnn warm {warm * 1000:.1f} ms = {warm / cold * 100:.2f}% of cold  (target <= 5%)")
        ok = cold / base <= 1.2 and warm / cold <= 0.05
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def unpack_list(site: Path) -> list[Path]:
    record = next(site.glob("*.dist-info")) / "RECORD"
    return [site / p[0] for p in (line.rsplit(",", 2) for line in record.read_text().splitlines())
            if len(p) == 3 and p[1]]


if __name__ == "__main__":
    sys.exit(main())
