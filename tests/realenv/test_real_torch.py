"""Opt-in: diagnose a real torch CUDA environment (gigabytes; not in the default run).

    FIXDNN_REALENV=/path/to/venv-with-torch-cuda python -m pytest tests/realenv

bench/diagnose_vs_collect_env.py creates such a venv under bench/out/torch-cuda.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import names, run_diagnosis

REALENV = os.environ.get("FIXDNN_REALENV")
pytestmark = [pytest.mark.realenv,
              pytest.mark.skipif(not REALENV, reason="set FIXDNN_REALENV to a venv holding a real torch CUDA build")]


def test_real_torch_cuda_environment_is_understood(environ):
    python = Path(REALENV) / "bin" / "python"
    facts, symptoms = run_diagnosis(python, environ)
    torch = next(fw for fw in facts.frameworks if fw.name == "torch")
    assert torch.gpu_build and torch.cuda
    cudnn_need = next(n for n in torch.needs if n.library == "cudnn")
    assert cudnn_need.pin and cudnn_need.pin.startswith("nvidia-cudnn-cu")
    loads = {o.library: o for o in facts.loads_of("torch")}
    shim = facts.copy_at(loads["cudnn"].path)
    assert shim.owner.startswith(f"pip:{cudnn_need.pin.split('==')[0]} ")
    assert shim.version.split(".")[:2] == cudnn_need.pin.split("==")[1].split(".")[:2]
    assert loads["cudnn_graph"].path and loads["cudnn_cnn"].path
    assert all(loads[f].path for f in ("cudart", "cublas", "cublasLt", "nvrtc"))
    assert names(symptoms, "error") == [], [s.summary for s in symptoms]
