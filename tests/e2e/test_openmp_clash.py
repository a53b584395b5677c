"""A real two-runtime clash: what FDN201 predicts for a layout is what a process of that layout does.

Each layout is a real venv with gcc-built stand-ins: stub Intel OpenMP runtimes that register themselves
like libiomp5 (and abort with "OMP: Error #15" on a second copy), a torch library and a numpy extension
linking them. fixdnn diagnoses the venv statically; then the venv's own python loads both extensions with
ctypes, as ``import numpy, torch`` would, and we compare.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

import fixdnn.knowledge.compat
from fixdnn.facts import gather
from fixdnn.symptoms.registry import diagnose
from fixdnn.target.host import Host
from fixdnn.target.interpreter import TargetSpec
from tests.envkit import cpu as cpukit
from tests.envkit.env import EnvBuilder

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build real ELF objects")

LOAD_BOTH = "import ctypes, sys\nfor p in sys.argv[1:]:\n    ctypes.CDLL(p)\nprint('loaded', len(sys.argv) - 1)\n"


def _diagnose(env, extra_env=None):
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(env.prefix), **(extra_env or {})}
    facts = gather(Host(environ=environ), TargetSpec(python=str(env.python)))
    return facts, {s.name: s for s in diagnose(facts, fixdnn.knowledge.compat.load())}


def _run(env, libs, extra_env=None):
    environ = {"PATH": "/usr/bin:/bin", **(extra_env or {})}
    return subprocess.run([str(env.python), "-c", LOAD_BOTH, *map(str, libs)], capture_output=True, text=True,
                          env=environ, timeout=60)


@pytest.fixture
def env(tmp_path):
    return EnvBuilder(tmp_path / "venv with space $x")


def test_two_intel_runtimes_predicted_and_the_process_aborts(env):
    torch_lib = cpukit.torch_cpu_iomp(env)
    numpy_ext = cpukit.numpy_vendored_iomp(env)
    facts, found = _diagnose(env)
    sym = found.get("openmp-duplicate-runtime")
    assert sym is not None and sym.severity == "error", found
    paths = sorted(r["path"] for r in sym.evidence["runtimes"])
    assert paths == sorted([str(env.site / "numpy.libs/libiomp5-3b1a9c2e.so"), str(env.site / "torch/lib/libiomp5.so")])
    proc = _run(env, [numpy_ext, torch_lib])
    assert proc.returncode == -signal.SIGABRT, (proc.returncode, proc.stderr)
    assert "OMP: Error #15: Initializing libiomp5.so, but found libiomp5-3b1a9c2e.so already initialized." in proc.stderr


def test_same_soname_twice_is_one_copy_not_predicted_and_runs(env):
    # numpy's extension finds <prefix>/lib/libiomp5.so (intel-openmp wheel), torch has its own libiomp5.so:
    # same SONAME, so the loader reuses the first and only one runtime starts.
    cpukit.add_intel_openmp_wheel(env)
    numpy_ext = cpukit.numpy_linked_iomp(env)
    torch_lib = cpukit.torch_cpu_iomp(env)
    facts, found = _diagnose(env)
    assert "openmp-duplicate-runtime" not in found, found["openmp-duplicate-runtime"].summary
    loaded = facts.cpu.loaded_runtimes()
    assert [lib.path for lib in loaded] == [str(cpukit.prefix_lib(env) / "libiomp5.so")]
    assert loaded[0].owner == "pip:intel-openmp 2024.2.1" and loaded[0].version == "2024.2.1"
    proc = _run(env, [numpy_ext, torch_lib])
    assert proc.returncode == 0 and "loaded 2" in proc.stdout, proc.stderr


def test_one_copy_runs(env):
    torch_lib = cpukit.torch_cpu_iomp(env)
    facts, found = _diagnose(env)
    assert "openmp-duplicate-runtime" not in found
    assert _run(env, [torch_lib]).returncode == 0


def test_kmp_duplicate_lib_ok_lets_it_run_and_is_flagged(env):
    torch_lib = cpukit.torch_cpu_iomp(env)
    numpy_ext = cpukit.numpy_vendored_iomp(env)
    facts, found = _diagnose(env, {"KMP_DUPLICATE_LIB_OK": "TRUE"})
    assert found["openmp-duplicate-runtime"].evidence["kmp_duplicate_lib_ok"] is True
    assert found["kmp-duplicate-lib-ok"].evidence["duplicate_predicted"] is True
    proc = _run(env, [numpy_ext, torch_lib], {"KMP_DUPLICATE_LIB_OK": "TRUE"})
    assert proc.returncode == 0 and "loaded 2" in proc.stdout, proc.stderr
    # a value the runtime does not read as true changes nothing: both sides agree
    facts, found = _diagnose(env, {"KMP_DUPLICATE_LIB_OK": "tx"})
    assert "kmp-duplicate-lib-ok" not in found
    assert _run(env, [numpy_ext, torch_lib], {"KMP_DUPLICATE_LIB_OK": "tx"}).returncode == -signal.SIGABRT


def test_intel_next_to_gnu_is_a_warning_and_runs(env):
    gomp_torch = cpukit.torch_cpu_gomp(env) / "libtorch_cpu.so"
    numpy_ext = cpukit.numpy_vendored_iomp(env)
    facts, found = _diagnose(env)
    sym = found["openmp-duplicate-runtime"]
    assert sym.severity == "warning"
    assert {r["vendor"] for r in sym.evidence["runtimes"]} == {"intel", "gnu"}
    proc = _run(env, [numpy_ext, gomp_torch])
    assert proc.returncode == 0, proc.stderr


def _paddle(env) -> Path:
    """paddlepaddle 3.3.1's shape: paddle/base/libpaddle.so needs libiomp5.so from paddle/libs (DT_RPATH)."""
    cpukit.omp_runtime(env.site / "paddle/libs/libiomp5.so")
    ext = cpukit.consumer(env.site / "paddle/base/libpaddle.so", "libpaddle.so", ["libiomp5.so"],
                          rpath="$ORIGIN/../libs")
    (env.site / "paddle/__init__.py").write_text("raise ImportError('fixdnn test stub: never import')\n")
    env.add_dist("paddlepaddle", "3.3.1", ["paddle/__init__.py", "paddle/libs/libiomp5.so", "paddle/base/libpaddle.so"])
    return ext


def _diskannpy(env) -> Path:
    """diskannpy 0.7: an auditwheel-renamed Intel OpenMP in diskannpy.libs, needed by its extension."""
    vendored = "libiomp5-3994699c.so"
    cpukit.omp_runtime(env.site / "diskannpy.libs" / vendored, vendored)
    ext = cpukit.consumer(env.site / "diskannpy/_diskannpy.cpython-311-x86_64-linux-gnu.so", "_diskannpy.so",
                          [vendored], rpath="$ORIGIN/../diskannpy.libs")
    (env.site / "diskannpy/__init__.py").write_text("raise ImportError('fixdnn test stub: never import')\n")
    env.add_dist("diskannpy", "0.7.0", ["diskannpy/__init__.py", f"diskannpy.libs/{vendored}",
                                        "diskannpy/" + ext.name])
    return ext


def test_two_ordinary_packages_that_each_ship_intel_openmp(env):
    """No framework in the fixed list: paddlepaddle's and diskannpy's own copies meet in one process."""
    paddle = _paddle(env)
    diskann = _diskannpy(env)
    facts, found = _diagnose(env)
    sym = found.get("openmp-duplicate-runtime")
    assert sym is not None and sym.severity == "error", sorted(found)
    users = {r["path"]: r["used_by"] for r in sym.evidence["runtimes"]}
    assert users == {str(env.site / "paddle/libs/libiomp5.so"): ["paddlepaddle"],
                     str(env.site / "diskannpy.libs/libiomp5-3994699c.so"): ["diskannpy"]}
    proc = _run(env, [paddle, diskann])
    assert proc.returncode == -signal.SIGABRT, (proc.returncode, proc.stderr)
    assert "OMP: Error #15: Initializing libiomp5-3994699c.so, but found libiomp5.so already initialized." in proc.stderr


def test_one_package_with_its_own_intel_openmp_is_silent(env):
    paddle = _paddle(env)
    facts, found = _diagnose(env)
    assert "openmp-duplicate-runtime" not in found
    assert [lib.path for lib in facts.cpu.loaded_runtimes()] == [str(env.site / "paddle/libs/libiomp5.so")]
    assert _run(env, [paddle]).returncode == 0
