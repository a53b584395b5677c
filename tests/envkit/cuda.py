"""Real CUDA parts without a GPU: fat binaries compiled by nvcc, stand-in libcuda.so.1 built by gcc, and
/proc-like driver files in a --root tree.

nvcc output is cached per recipe like tests/envkit/elfkit.py does for gcc. Without nvcc a test that needs
it is skipped with a visible message, and fails under CI (CI=true), where nvcc is part of the machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.envkit.elfkit import _CACHE, build_so, built_once, deliver

NVCC_CANDIDATES = ("/usr/local/bin/nvcc", "/usr/local/cuda/bin/nvcc")

_KERNEL = r"""
__global__ void fixdnn_add(float *a, float b) { a[threadIdx.x] += b; }
extern "C" void fixdnn_launch(float *a) { fixdnn_add<<<1, 1>>>(a, 1.0f); }
"""


def nvcc() -> str:
    """The nvcc to use: $FIXDNN_NVCC, a usual place, or PATH. Skips (fails under CI) when there is none."""
    for candidate in (os.environ.get("FIXDNN_NVCC"), *NVCC_CANDIDATES, shutil.which("nvcc")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    msg = "nvcc not found (set FIXDNN_NVCC): the fat binary tests need real nvcc output"
    if os.environ.get("CI"):
        pytest.fail(f"{msg}; nvcc is required when CI is set", pytrace=False)
    pytest.skip(msg)


def gencode(arch: str) -> list[str]:
    """'sm_90' -> SASS for 9.0 (from compute_90 PTX); 'compute_120' -> PTX only; 'sm_100f', 'sm_90a' too."""
    kind, number = arch.split("_", 1)
    code = f"{kind}_{number}"
    return ["-gencode", f"arch=compute_{number},code={code}"]


def fatbin_so(dest: str | os.PathLike, archs: list[str] | tuple[str, ...], *, compress: str | None = None,
              units: tuple[tuple[str, ...], ...] = ()) -> Path:
    """A shared library with a real ``.nv_fatbin`` section holding kernels for ``archs``; each of ``units``
    is one more compiled source file (one more fat binary container) with its own architectures."""
    files = [tuple(archs), *units]
    extra = [f"-compress-mode={compress}"] if compress else []
    key = hashlib.sha256(json.dumps(["nvcc-2", files, extra, _KERNEL]).encode()).hexdigest()[:24]

    def build(work: Path) -> Path:
        compiler = nvcc()
        objects = []
        for n, unit in enumerate(files):
            src = work / f"k{n}.cu"
            src.write_text(_KERNEL.replace("fixdnn_", f"fixdnn{n}_"))
            obj = work / f"k{n}.o"
            _nvcc([compiler, "-c", "-Xcompiler", "-fPIC", "-o", str(obj), str(src), *extra,
                   *(a for arch in unit for a in gencode(arch))])
            objects.append(str(obj))
        _nvcc([compiler, "-shared", "-o", str(work / "lib.so"), *objects, *extra,
               *(a for arch in files[0] for a in gencode(arch))])  # the device link nvcc adds, as in one step
        return work / "lib.so"

    cached = built_once(_CACHE / key / "lib.so", build)
    return deliver(cached, dest)


def _nvcc(argv: list[str]) -> None:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr}")


_LIBCUDA = r"""
int cuInit(unsigned int flags) { return 0; }
int cuDeviceGetCount(int *count) { *count = 1; return 0; }
int cuDriverGetVersion(int *v) { *v = %(cuda)d; return 0; }
"""


def libcuda(folder: str | os.PathLike, driver: str | None = "580.65.06", cuda: int = 13000) -> Path:
    """The layout a driver install leaves: libcuda.so.<driver> (cuDriverGetVersion -> ``cuda``) and the
    libcuda.so.1 link to it; ``driver=None`` gives a plain libcuda.so.1 file (WSL2 ships it so)."""
    folder = Path(folder)
    name = f"libcuda.so.{driver}" if driver else "libcuda.so.1"
    real = build_so(folder / name, "libcuda.so.1", c_source=_LIBCUDA % {"cuda": cuda})
    if driver:
        link = folder / "libcuda.so.1"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(name)
        return link
    return real


def proc_driver(root: str | os.PathLike, version: str = "580.65.06",
                gpus: tuple[tuple[str, str], ...] = (("0000:01:00.0", "NVIDIA H100 80GB HBM3"),)) -> None:
    """/proc/driver/nvidia/version, gpus/<bus>/information and /sys/module/nvidia/version, as the kernel
    module writes them."""
    root = Path(root)
    proc = root / "proc/driver/nvidia"
    proc.mkdir(parents=True, exist_ok=True)
    (proc / "version").write_text(
        f"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  {version}  Release Build  "
        "(dvs-builder@U16-I3-B03-4-3)  Tue Jul  8 17:19:39 UTC 2025\n"
        "GCC version:  gcc version 12.3.0 (Ubuntu 12.3.0-1ubuntu1~22.04)\n")
    for bus, name in gpus:
        folder = proc / "gpus" / bus
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "information").write_text(
            f"Model: \t\t {name}\nIRQ:   \t\t 146\nGPU UUID: \t GPU-5c3b2a10-0000-0000-0000-000000000000\n"
            f"Video BIOS: \t 96.00.99.00.01\nBus Type: \t PCIe\nDMA Size: \t 52 bits\nDMA Mask: \t 0xfffffffffffff\n"
            f"Bus Location: \t {bus}\nDevice Minor: \t 0\nGPU Excluded:\t No\n")
    sys_mod = root / "sys/module/nvidia"
    sys_mod.mkdir(parents=True, exist_ok=True)
    (sys_mod / "version").write_text(version + "\n")


_NVML = r"""
#include <string.h>
static const char *names[] = {%(names)s};
static const int ccs[][2] = {%(ccs)s};
int nvmlInit_v2(void) { return 0; }
int nvmlShutdown(void) { return 0; }
int nvmlSystemGetDriverVersion(char *buf, unsigned n) { strncpy(buf, "%(driver)s", n); return 0; }
int nvmlDeviceGetCount_v2(unsigned *count) { *count = %(count)d; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned i, void **dev) { *dev = (void *)(long)(i + 1); return 0; }
int nvmlDeviceGetName(void *dev, char *buf, unsigned n) { strncpy(buf, names[(long)dev - 1], n); return 0; }
int nvmlDeviceGetCudaComputeCapability(void *dev, int *major, int *minor) {
    *major = ccs[(long)dev - 1][0]; *minor = ccs[(long)dev - 1][1]; return 0; }
"""


def nvml(folder: str | os.PathLike, gpus: tuple[tuple[str, str], ...], driver: str = "580.65.06") -> Path:
    """A stand-in libnvidia-ml.so.1 answering the NVML calls fixdnn makes for ``gpus`` ((name, "9.0"), ...)."""
    source = _NVML % {"names": ", ".join(f'"{n}"' for n, _ in gpus),
                      "ccs": ", ".join("{%s, %s}" % tuple(cc.split(".")) for _, cc in gpus),
                      "driver": driver, "count": len(gpus)}
    return build_so(Path(folder) / "libnvidia-ml.so.1", "libnvidia-ml.so.1", c_source=source)
