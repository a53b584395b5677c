"""The GPU rules as pure functions: which compiled code runs on which GPU, the name table, PTX and driver
tables, and the torch variant a fix names (over facts built in memory, as a saved facts file holds them)."""

from __future__ import annotations

import pytest

from fixdnn.knowledge import compat as compat_mod
from fixdnn.knowledge.gpu import coverage, ptx_runs, sass_runs
from fixdnn.model.facts import (Driver, Facts, Framework, FrameworkKernels, Gpu, GpuFacts, KernelImages, LibCuda,
                                TargetInfo)
from fixdnn.symptoms.registry import diagnose

COMPAT = compat_mod.load()
TABLES = COMPAT.gpu


@pytest.mark.parametrize("arch,cc,runs", [
    ("sm_80", 86, True), ("sm_80", 89, True), ("sm_86", 80, False), ("sm_80", 90, False), ("sm_90", 100, False),
    ("sm_90a", 90, True), ("sm_90a", 91, False), ("sm_100f", 103, True), ("sm_100f", 120, False),
    ("sm_120", 121, True), ("bogus", 90, False),
])
def test_machine_code_runs_within_its_major(arch, cc, runs):
    assert sass_runs(arch, cc) is runs


@pytest.mark.parametrize("arch,cc,runs", [
    ("compute_75", 120, True), ("compute_90", 89, False), ("compute_90a", 100, False), ("compute_90a", 90, True),
    ("compute_120f", 121, True), ("compute_100f", 120, False),
])
def test_ptx_runs_on_newer_gpus(arch, cc, runs):
    assert ptx_runs(arch, cc) is runs


def test_coverage_prefers_machine_code_and_knows_unknowns():
    assert coverage(("sm_80",), ("compute_80",), "8.6") == "sass"
    assert coverage(("sm_90",), ("compute_80",), "12.0") == "ptx"
    assert coverage(("sm_90",), (), "12.0") == "none"
    assert coverage(("sm_90",), (), None) is None


@pytest.mark.parametrize("name,cc", [
    ("NVIDIA H100 80GB HBM3", "9.0"), ("NVIDIA GeForce RTX 5090", "12.0"), ("NVIDIA A100-SXM4-80GB", "8.0"),
    ("NVIDIA A10G", "8.6"), ("NVIDIA L40S", "8.9"), ("NVIDIA L4", "8.9"), ("Tesla T4", "7.5"),
    ("NVIDIA GeForce RTX 4090 Laptop GPU", "8.9"), ("NVIDIA GB200", "10.0"), ("Some Unknown Board", None),
])
def test_name_table_matches_whole_words_longest_first(name, cc):
    hit = TABLES.by_name(name)
    assert (hit.cc if hit else None) == cc


def test_ptx_and_driver_tables():
    assert TABLES.cuda_for_ptx("9.0") == "13.0" and TABLES.cuda_for_ptx("8.6") == "12.7"
    assert TABLES.cuda_of_driver("570.133.07") == "12.8"
    assert TABLES.cuda_of_driver("580.95.05") == "13.0"
    assert TABLES.cuda_of_driver("470.82.01") is None  # older than the table: unknown, not "fine"
    assert TABLES.driver_for_cuda("12.7") == "570.26"  # no 12.7 row: the next release's minimum


def _facts(torch: str, sass: tuple[str, ...], gpu: str, cc: str | None, driver: str = "580.65.06") -> Facts:
    target = TargetInfo(python=None, python_version="3.12", prefix="/env", base_prefix="/env", kind="venv")
    fw = Framework("torch", "torch", torch, True, cuda="12.6")
    lib = KernelImages("/env/site/torch/lib/libtorch_cuda.so", sass, (), None, 40, containers=8)
    return Facts(target=target, frameworks=(fw,), driver=Driver(driver, "/proc/driver/nvidia/version"),
                 gpu=GpuFacts(gpus=(Gpu(gpu, cc, "nvidia-smi", "nvidia-smi"),),
                              libcuda=LibCuda("/usr/lib/libcuda.so.1", f"/usr/lib/libcuda.so.{driver}", "driver",
                                              driver, "file name"),
                              kernels=(FrameworkKernels("torch", torch, (lib,)),)))


CU126 = ("sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90")


def test_the_fix_is_a_variant_the_driver_runs():
    """torch 2.10 has cu128 and cu130 variants with sm_120; a 570 driver runs only cu128."""
    s, = [x for x in diagnose(_facts("2.10.0+cu126", CU126, "NVIDIA GeForce RTX 5090", "12.0", "570.133.07"), COMPAT)
          if x.name == "gpu-no-kernel"]
    assert s.evidence["fix"]["pin"] == "torch==2.10.0+cu128"
    s, = [x for x in diagnose(_facts("2.10.0+cu126", CU126, "NVIDIA GeForce RTX 5090", "12.0", "580.95.05"), COMPAT)
          if x.name == "gpu-no-kernel"]
    assert s.evidence["fix"]["pin"] == "torch==2.10.0+cu130"


def test_no_variant_of_the_release_has_the_gpu():
    """A Pascal P100 (6.0) on torch 2.14.1+cu130: only cu126 has sm_60; the fix stays within the release."""
    s, = [x for x in diagnose(_facts("2.14.1+cu130", ("sm_75", "sm_80", "sm_90", "sm_100", "sm_120"),
                                     "Tesla P100-PCIE-16GB", "6.0"), COMPAT) if x.name == "gpu-no-kernel"]
    assert s.evidence["fix"]["pin"] == "torch==2.14.1+cu126"


def test_a_gpu_of_unknown_capability_gets_no_kernel_verdict():
    found = diagnose(_facts("2.14.1+cu130", ("sm_90",), "Some Unknown Board", None), COMPAT)
    assert not [x for x in found if x.name in ("gpu-no-kernel", "gpu-ptx-only")]
