"""Opt-in (gigabytes; not in the default run): issue 11's families on real wheels.

    FIXDNN_REALENV=/venv/with/torch-cuda                      torch: items 1-3 on a hard-linked copy
    FIXDNN_REALENV_TENSORFLOW=/venv/with/tensorflow[and-cuda]
    FIXDNN_REALENV_JAX=/venv/with/jax[cuda12]
    FIXDNN_REALENV_ONNXRUNTIME=/venv/with/onnxruntime-gpu
    FIXDNN_REALENV_PADDLE=/venv/with/paddlepaddle-gpu
    python -m pytest tests/realenv/test_real_loading.py

Environments are never changed: each break is made in a ``cp -al`` copy by moving or replacing entries,
never by writing into a (hard-linked) file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
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


@pytest.mark.parametrize("variable, framework", sorted(FRAMEWORKS.items()))
def test_real_framework_is_understood_and_healthy(variable, framework, environ):
    prefix = _venv(variable)
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
