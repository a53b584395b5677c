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
