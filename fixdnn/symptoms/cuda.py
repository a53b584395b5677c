"""CUDA runtime symptoms: cudart / cuBLAS / cuBLASLt / NVRTC missing, or of the wrong major."""

from __future__ import annotations

from fixdnn.model.facts import Facts
from fixdnn.symptoms.cudnn import version_tuple
from fixdnn.symptoms.registry import check


def _runtime_needs(facts: Facts):
    for fw in facts.frameworks:
        if not fw.gpu_build:
            continue
        for need in fw.needs:
            if need.library == "cudnn":
                continue
            outcome = next((o for o in facts.loads_of(fw.name) if o.library == need.library), None)
            yield fw, need, outcome


@check("FDN111", "cuda-runtime-missing", "error", "A CUDA runtime library the framework needs is not reachable")
def cuda_runtime_missing(facts: Facts, compat):
    """The framework's CUDA build needs ``libcudart``, ``libcublas``, ``libcublasLt`` or ``libnvrtc`` of its
    CUDA major, and the loader would not find it. torch then fails at import
    (``libcudart.so.13: cannot open shared object file``), TensorFlow skips the GPU ("Cannot dlopen some GPU
    libraries")."""
    for fw, need, outcome in _runtime_needs(facts):
        if outcome is None or outcome.path is not None:
            continue
        soname = outcome.soname
        others = [c.path for c in facts.copies(need.library) if c.error is None]
        yield cuda_runtime_missing.spec.make(
            f"{fw.name} {fw.version} (CUDA {fw.cuda}) needs {soname} and the loader would not find it",
            {"framework": fw.name, "library": need.library, "soname": soname, "cuda": fw.cuda,
             "wheel": compat.wheel_for(need.library, need.major), "other_copies": others},
            chain=tuple(outcome.preload) + tuple(outcome.resolution.explain()),
            hint=f"install {compat.wheel_for(need.library, need.major)}")


@check("FDN112", "cuda-runtime-mismatch", "error", "A reachable CUDA library has the wrong version for the framework")
def cuda_runtime_mismatch(facts: Facts, compat):
    """The CUDA library that would load is of another major than the framework's CUDA build (a mislabelled
    or hand-symlinked file), or an older minor than the build (missing symbols at first use)."""
    for fw, need, outcome in _runtime_needs(facts):
        if outcome is None or outcome.path is None:
            continue
        copy = facts.copy_at(outcome.path)
        have = version_tuple(copy.version) if copy else None
        if copy is None or have is None:
            continue
        build = version_tuple(fw.cuda) if need.library == "cudart" else None
        wrong_major = have[0] != need.major
        older = bool(build and len(have) >= 2 and have[0] == build[0] and have[:2] < build[:2])
        if not wrong_major and not older:
            continue
        what = f"major {have[0]}, needs {need.major}" if wrong_major else f"{copy.version}, older than CUDA {fw.cuda}"
        yield cuda_runtime_mismatch.spec.make(
            f"{fw.name} would load {copy.path} ({what})",
            {"framework": fw.name, "library": need.library, "loaded": {"path": copy.path, "version": copy.version,
             "owner": copy.owner}, "needs_major": need.major, "cuda": fw.cuda},
            chain=tuple(outcome.resolution.explain()),
            hint=f"install {compat.wheel_for(need.library, need.major)} matching CUDA {fw.cuda}",
            severity="error" if wrong_major else "warning")
