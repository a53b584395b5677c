"""Opt-in: probe the real cuDNN wheel and a real torch CUDA build (hundreds of MB; not in the default run).

    FIXDNN_REALENV=/path/to/venv-with-torch-cuda python -m pytest tests/realenv -m realenv
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fixdnn.facts import gather
from fixdnn.probes.suite import verify
from fixdnn.target.host import Host
from fixdnn.target.interpreter import TargetSpec

REALENV = os.environ.get("FIXDNN_REALENV")
pytestmark = [pytest.mark.realenv,
              pytest.mark.skipif(not REALENV, reason="set FIXDNN_REALENV to a venv holding torch CUDA + nvidia-cudnn")]


def test_real_cudnn_and_torch_conv2d(tmp_path):
    host = Host(environ={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"})
    facts = gather(host, TargetSpec(python=str(Path(REALENV) / "bin" / "python")))
    result = verify(facts, host, timeout=600)
    passed = "\n".join(result.passed)
    assert "cudnnGetVersion() = 92400 (9.24.0)" in passed
    assert "torch: conv2d on the CPU works" in passed and "torch: cuDNN version query works (92400)" in passed
    errors = [f.summary for f in result.findings if f.severity == "error"]
    assert errors == []
    has_gpu = any("cudnnCreate() = 0" in p for p in result.passed)
    if not has_gpu:
        no_gpu = next(f for f in result.findings if f.name == "cudnn-no-gpu")
        assert no_gpu.evidence["status"] == 1001 and no_gpu.evidence["name"] == "CUDNN_STATUS_NOT_INITIALIZED"
    assert not any(f.name == "load-differs-from-model" for f in result.findings)
