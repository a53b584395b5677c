"""NVIDIA driver symptoms: too old for the framework's CUDA major, or absent."""

from __future__ import annotations

from packaging.version import InvalidVersion, Version

from fixdnn.model.facts import Facts
from fixdnn.symptoms.registry import check


def _cuda_major(cuda: str | None) -> int | None:
    try:
        return Version(cuda).major if cuda else None
    except InvalidVersion:
        return None


@check("FDN121", "driver-too-old", "error", "The NVIDIA driver is older than the framework's CUDA needs")
def driver_too_old(facts: Facts, compat):
    """A CUDA 12.x runtime needs a driver >= 525.60.13 and a 13.x runtime >= 580.65.06 (minor version
    compatibility). Older drivers fail at the first CUDA call ("CUDA driver version is insufficient for CUDA
    runtime version"). pip cannot fix this: the driver belongs to the system."""
    if facts.driver is None or not facts.driver.version:
        return
    try:
        have = Version(facts.driver.version)
    except InvalidVersion:
        return
    for fw in facts.frameworks:
        major = _cuda_major(fw.cuda) if fw.gpu_build else None
        floor = compat.driver_floor.get(major) if major else None
        if floor is None or have >= Version(floor):
            continue
        yield driver_too_old.spec.make(
            f"driver {facts.driver.version} is older than {floor}, the minimum for {fw.name}'s CUDA {fw.cuda}",
            {"framework": fw.name, "driver": facts.driver.version, "minimum": floor, "cuda": fw.cuda},
            chain=(f"{facts.driver.source}: {facts.driver.version}", f"CUDA {major}.x needs a driver >= {floor}"),
            hint=f"upgrade the NVIDIA driver to {floor} or newer, or install a build of {fw.name} for an older CUDA")


@check("FDN122", "driver-missing", "info", "A CUDA build is installed but no NVIDIA driver is present")
def driver_missing(facts: Facts, compat):
    """No NVIDIA kernel driver is loaded (``/proc/driver/nvidia/version`` is absent). On a machine without a
    GPU this is expected: the frameworks fall back to the CPU."""
    if facts.driver is not None or (facts.gpu is not None and facts.gpu.wsl and facts.gpu.libcuda is not None):
        return  # WSL2 has no kernel module of its own: the Windows driver serves /usr/lib/wsl/lib
    gpu = [fw for fw in facts.frameworks if fw.gpu_build]
    if not gpu:
        return
    yield driver_missing.spec.make(
        "no NVIDIA driver is loaded: " + ", ".join(f"{fw.name} {fw.version}" for fw in gpu) + " will run on the CPU",
        {"frameworks": [fw.name for fw in gpu]},
        chain=("/proc/driver/nvidia/version: absent", "/sys/module/nvidia/version: absent"),
        hint="nothing to do on a CPU-only machine; on a GPU machine install the NVIDIA driver")
