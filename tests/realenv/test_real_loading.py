"""Opt-in (gigabytes; not in the default run): issue 11's families on real wheels.

    FIXDNN_REALENV=/venv/with/torch-cuda                      torch: items 1-3 on a hard-linked copy
    FIXDNN_REALENV_TENSORFLOW=/venv/with/tensorflow[and-cuda]
    FIXDNN_REALENV_JAX=/venv/with/jax[cuda12]
    FIXDNN_REALENV_ONNXRUNTIME=/venv/with/onnxruntime-gpu
    FIXDNN_REALENV_PADDLE=/venv/with/paddlepaddle-gpu
    FIXDNN_REALENV_OLD_CUDNN_WHEEL=/wheels/nvidia_cudnn_cu12-9.1.0.70-...whl   an older cuDNN 9 for the breaks
    python -m pytest tests/realenv/test_real_loading.py

The onnxruntime-gpu environment is the documented install, ``pip install 'onnxruntime-gpu[cuda,cudnn]'``; its
CUDA provider has no RUNPATH, so ORT's docs add the wheels' lib folders to LD_LIBRARY_PATH (or call
``onnxruntime.preload_dlls()`` in the program, which fixdnn cannot see): the tests use the former.

Environments are never changed: each break is made in a ``cp -al`` copy by moving or replacing entries,
never by writing into a (hard-linked) file.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import names, run_diagnosis

pytestmark = pytest.mark.realenv

FRAMEWORKS = {"FIXDNN_REALENV": "torch", "FIXDNN_REALENV_TENSORFLOW": "tensorflow", "FIXDNN_REALENV_JAX": "jax",
              "FIXDNN_REALENV_ONNXRUNTIME": "onnxruntime", "FIXDNN_REALENV_PADDLE": "paddle"}


def _venv(variable: str) -> Path:
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"set {variable} to a real environment")
    return Path(value)


def _linked_copy(source: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "env"
    proc = subprocess.run(["cp", "-al", str(source), str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot hard-link {source} here: {proc.stderr.strip()}")
    return dest


def _site(prefix: Path) -> Path:
    return next(prefix.glob("lib/python3*/site-packages"))


def _without_cudnn_wheel(prefix: Path, parked: Path) -> Path:
    """Move the cuDNN wheel out of the copy (what `pip uninstall` leaves); returns its bare lib/ folder."""
    site = _site(prefix)
    parked.mkdir()
    shutil.move(str(site / "nvidia/cudnn"), str(parked / "cudnn"))
    for meta in site.glob("nvidia_cudnn_cu*.dist-info"):
        shutil.move(str(meta), str(parked / meta.name))
    for header in (parked / "cudnn").glob("include"):
        shutil.move(str(header), str(parked / "include-moved"))
    return parked / "cudnn/lib"


def _ort_library_path(site: Path) -> list[str]:
    """ORT's documented alternative to preload_dlls(): the nvidia wheels' lib folders on LD_LIBRARY_PATH."""
    return [str(p) for p in (site / "nvidia/cu13/lib", site / "nvidia/cublas/lib", site / "nvidia/cuda_runtime/lib",
                             site / "nvidia/cudnn/lib") if p.is_dir()]


@pytest.mark.parametrize("variable, framework", sorted(FRAMEWORKS.items()))
def test_real_framework_is_understood_and_healthy(variable, framework, environ):
    prefix = _venv(variable)
    if framework == "onnxruntime":
        environ["LD_LIBRARY_PATH"] = ":".join(_ort_library_path(_site(prefix)))
    facts, symptoms = run_diagnosis(prefix / "bin/python", environ)
    fw = next(f for f in facts.frameworks if f.name == framework)
    assert fw.gpu_build and any(n.library == "cudnn" for n in fw.needs), fw
    load = next(o for o in facts.loads_of(framework) if o.library == "cudnn")
    assert load.path, "\n".join(load.resolution.explain())
    copy = facts.copy_at(load.path)
    assert copy.version and "." in copy.version, copy
    assert names(symptoms, "error") == [], [s.summary for s in symptoms]


def test_real_torch_bare_cudnn_on_ld_library_path_is_read_from_the_binary(environ, tmp_path):
    """Item 1 on the real library: only lib/ files, no header, no dist-info: cudnnGetVersion() answers."""
    prefix = _linked_copy(_venv("FIXDNN_REALENV"), tmp_path)
    lib = _without_cudnn_wheel(prefix, tmp_path / "parked")
    environ["LD_LIBRARY_PATH"] = str(lib)
    facts, symptoms = run_diagnosis(prefix / "bin/python", environ)
    copy = facts.copy_at(next(o for o in facts.loads_of("torch") if o.library == "cudnn").path)
    assert copy.version_source.startswith("cudnnGetVersion() = "), copy
    need = next(n for n in next(f for f in facts.frameworks if f.name == "torch").needs if n.library == "cudnn")
    assert copy.version.split(".")[:2] == need.minimum.split(".")
    assert names(symptoms, "error") == [], [s.summary for s in symptoms]


def test_real_torch_ld_preload_is_what_loads(environ, tmp_path):
    """Item 2: the preloaded copy answers libcudnn.so.9 even though torch's wheel copy is installed."""
    prefix = _linked_copy(_venv("FIXDNN_REALENV"), tmp_path)
    other = tmp_path / "other-cudnn"
    shutil.copytree(_site(prefix) / "nvidia/cudnn/lib", other, copy_function=os.link)
    environ["LD_PRELOAD"] = str(other / "libcudnn.so.9")
    facts, symptoms = run_diagnosis(prefix / "bin/python", environ)
    load = next(o for o in facts.loads_of("torch") if o.library == "cudnn")
    assert load.path == str(other / "libcudnn.so.9") and load.preload[0].startswith("LD_PRELOAD[0]")
    assert "cudnn-shadowed" in names(symptoms)


def test_real_torch_pip_target_copy_on_pythonpath_is_named(environ, tmp_path):
    """Item 3: a second install of the cuDNN wheel (as `pip install --target DIR` lays it out) on PYTHONPATH."""
    prefix = _linked_copy(_venv("FIXDNN_REALENV"), tmp_path)
    site = _site(prefix)
    target = tmp_path / "target"
    shutil.copytree(site / "nvidia/cudnn", target / "nvidia/cudnn", copy_function=os.link)
    for meta in site.glob("nvidia_cudnn_cu*.dist-info"):
        shutil.copytree(meta, target / meta.name, copy_function=os.link)
    environ["PYTHONPATH"] = str(target)
    facts, symptoms = run_diagnosis(prefix / "bin/python", environ)
    shadow = next(s for s in symptoms if s.name == "cudnn-shadowed")
    assert shadow.evidence["entry"]["origin"] == "pythonpath" and shadow.evidence["entry"]["path"] == str(target)


def test_real_jax_cusparse_over_an_older_nvjitlink_names_the_loaders_message(environ, tmp_path):
    """Item 6 on the real wheels: nvidia-nvjitlink-cu12 12.4.127 under cuSPARSE 12.5 (CUDA 12.9). JAX only
    says "Unable to load cuSPARSE"; the loader says which symbol, and so must fixdnn, word for word."""
    prefix = _linked_copy(_venv("FIXDNN_REALENV_JAX"), tmp_path)
    site = _site(prefix)
    proc = subprocess.run([str(prefix / "bin/python"), "-m", "pip", "install", "-q", "--no-deps",
                           "nvidia-nvjitlink-cu12==12.4.127"], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot install nvidia-nvjitlink-cu12==12.4.127 here: {proc.stderr.strip()[-300:]}")
    cusparse = site / "nvidia/cusparse/lib/libcusparse.so.12"
    real = subprocess.run([str(prefix / "bin/python"), "-c", "import ctypes, sys\ntry:\n    ctypes.CDLL(sys.argv[1])\n"
                           "except OSError as e:\n    print(e)\n", str(cusparse)], capture_output=True, text=True)
    facts, symptoms = run_diagnosis(prefix / "bin/python", environ)
    found = [s for s in symptoms if s.name == "library-symbol-missing"]
    assert len(found) == 1, [s.summary for s in symptoms]
    ev = found[0].evidence
    assert ev["loader_message"] == real.stdout.strip()
    assert ev["provider_owner"] == "nvidia-nvjitlink-cu12 12.4.127" and ev["frameworks"] == ["jax"]


# -- issue 11's breaks on TensorFlow, JAX and ONNX Runtime, each compared with the framework's own loading ----

# Runs in the broken environment: the framework's own cuDNN loading without a GPU, then which file answers
# libcudnn.so.9 (dladdr of cudnnGetVersion in the object a dlopen by name gets). TensorFlow: its DsoLoader
# (exported by libtensorflow_framework.so.2, the same dlopen from the same object as at GPU start). JAX: the
# CUDA plugin's _load_nvidia_libraries(). ONNX Runtime: nothing before the provider's dlopen by name.
_TRUTH = r"""
import ctypes, glob, os, sys
framework = sys.argv[1]
if framework == "tensorflow":
    import tensorflow as tf
    fw = ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(tf.__file__), "libtensorflow_framework.so.*"))[0])
    fn = fw._ZN3tsl8internal9DsoLoader17GetCudnnDsoHandleEv
    fn.restype, fn.argtypes = None, [ctypes.c_void_p]
    status_or = (ctypes.c_uint64 * 8)()  # absl::StatusOr<void*>, returned through a hidden pointer
    fn(ctypes.addressof(status_or))
elif framework == "jax":
    import importlib, importlib.util
    plugin = next(importlib.import_module(m) for m in ("jax_plugins.xla_cuda12", "jax_plugins.xla_cuda13")
                  if importlib.util.find_spec(m))
    plugin._load_nvidia_libraries()
try:
    lib = ctypes.CDLL("libcudnn.so.9", mode=ctypes.RTLD_GLOBAL | (4 if framework != "onnxruntime" else 0))
except OSError as e:
    try:  # nothing loaded yet: the framework's later dlopen by name
        lib = ctypes.CDLL("libcudnn.so.9")
    except OSError as e:
        print("none", e)
        sys.exit()
class Info(ctypes.Structure):
    _fields_ = [("fname", ctypes.c_char_p), ("fbase", ctypes.c_void_p), ("sname", ctypes.c_char_p), ("saddr", ctypes.c_void_p)]
info = Info()
ctypes.CDLL(None).dladdr(ctypes.cast(lib.cudnnGetVersion, ctypes.c_void_p), ctypes.byref(info))
print(os.path.realpath(info.fname.decode()))
"""

# case -> framework -> (cuDNN symptoms fixdnn must name, exit code). What each framework really loads is
# checked against _TRUTH in every case; these are the verdicts seen on tensorflow[and-cuda] 2.21,
# jax[cuda12] 0.10.2 and onnxruntime-gpu[cuda,cudnn] 1.31.1 with nvidia-cudnn-cu12 9.1.0.70 as the old copy.
_BREAKS = {
    "healthy": {"tensorflow": ([], 0), "jax": ([], 0), "onnxruntime": ([], 0)},
    # `pip uninstall nvidia-cudnn-cuN`: TF "Could not load dynamic library 'libcudnn.so.9'", JAX "Unable to
    # load cuDNN. Is it installed?"
    "wheel-removed": {"tensorflow": (["cudnn-missing"], 1), "jax": (["cudnn-missing"], 1),
                      "onnxruntime": (["cudnn-missing"], 1)},
    # LD_LIBRARY_PATH beats TF's RUNPATH; JAX loads the wheel's copy by full path first and is unaffected
    "old-on-ld-library-path": {"tensorflow": (["cudnn-shadowed", "cudnn-version-mismatch"], 1), "jax": ([], 0),
                               "onnxruntime": (["cudnn-shadowed"], 0)},
    # the preloaded shim answers every later dlopen; ORT's LD_LIBRARY_PATH feeds it the wheel's sub-libraries
    "old-ld-preload": {"tensorflow": (["cudnn-shadowed", "cudnn-version-mismatch"], 1),
                       "jax": (["cudnn-shadowed", "cudnn-version-mismatch"], 1),
                       "onnxruntime": (["cudnn-incomplete", "cudnn-shadowed"], 1)},
    # `pip install --target DIR` + PYTHONPATH=DIR: only JAX walks sys.path (nvidia.cudnn.__path__)
    "old-pip-target-on-pythonpath": {"tensorflow": ([], 0), "jax": (["cudnn-shadowed", "cudnn-version-mismatch"], 1),
                                     "onnxruntime": ([], 0)},
}
_VARIABLES = {"tensorflow": "FIXDNN_REALENV_TENSORFLOW", "jax": "FIXDNN_REALENV_JAX",
              "onnxruntime": "FIXDNN_REALENV_ONNXRUNTIME"}


@pytest.fixture(scope="module")
def old_cudnn(tmp_path_factory):
    """The older cuDNN wheel as `pip install --target DIR` lays it out (DIR, DIR/nvidia/cudnn/lib)."""
    wheel = os.environ.get("FIXDNN_REALENV_OLD_CUDNN_WHEEL")
    if not wheel:
        pytest.skip("set FIXDNN_REALENV_OLD_CUDNN_WHEEL to an older nvidia-cudnn-cu12 9.x wheel file")
    target = tmp_path_factory.mktemp("old-cudnn") / "target"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target",
                           str(target), wheel], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot unpack {wheel}: {proc.stderr.strip()[-300:]}")
    return target, target / "nvidia/cudnn/lib"


def _cli(python: Path, environ: dict, cwd: Path) -> tuple[int, dict]:
    proc = subprocess.run([sys.executable, "-m", "fixdnn", "--json", "--offline", "--python", str(python)],
                          capture_output=True, text=True, env=environ, cwd=cwd)
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("case", sorted(_BREAKS))
@pytest.mark.parametrize("framework", sorted(_VARIABLES))
def test_real_break_is_named_as_the_framework_meets_it(framework, case, old_cudnn, environ, tmp_path):
    prefix = _linked_copy(_venv(_VARIABLES[framework]), tmp_path)
    site = _site(prefix)
    target, old_lib = old_cudnn
    library_path = []
    if framework == "onnxruntime":
        library_path = _ort_library_path(site)
    if case == "wheel-removed":
        _without_cudnn_wheel(prefix, tmp_path / "parked")
        library_path = [p for p in library_path if not p.endswith("cudnn/lib")]
    elif case == "old-on-ld-library-path":
        library_path.insert(0, str(old_lib))
    elif case == "old-ld-preload":
        environ["LD_PRELOAD"] = str(old_lib / "libcudnn.so.9")
    elif case == "old-pip-target-on-pythonpath":
        environ["PYTHONPATH"] = str(target)
    if library_path:
        environ["LD_LIBRARY_PATH"] = ":".join(library_path)
    want, code = _BREAKS[case][framework]
    rc, report = _cli(prefix / "bin/python", environ, tmp_path)
    found = sorted(s["name"] for s in report["symptoms"] if s["name"].startswith("cudnn"))
    noisy = [s["summary"] for s in report["symptoms"] if s["severity"] != "info" and not s["name"].startswith("cudnn")
             and s["name"] not in ("ld-preload-dnn", "ld-library-path-missing-dir")]
    assert (found, rc, noisy) == (want, code, []), report["symptoms"]
    real = subprocess.run([str(prefix / "bin/python"), "-c", _TRUTH, framework], capture_output=True, text=True,
                          env=environ, cwd=tmp_path, timeout=600)
    answer = (real.stdout.strip().splitlines() or [f"? exit status {real.returncode}"])[-1]
    predicted = next(f for f in report["frameworks"] if f["name"] == framework)["cudnn"]["resolved_path"]
    if predicted is None:
        assert answer.startswith("none"), (answer, real.stderr[-2000:])
    else:
        assert os.path.realpath(predicted) == answer, (predicted, answer, real.stderr[-2000:])
    for s in report["symptoms"]:
        if s["name"] in ("cudnn-shadowed", "cudnn-version-mismatch") and case == "old-pip-target-on-pythonpath":
            assert s["evidence"]["entry"] == {"index": 1, "path": str(target), "origin": "pythonpath"}, s
