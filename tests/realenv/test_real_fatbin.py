"""Opt-in: the fat binary reader against the real torch CUDA wheel, whose own answer is the oracle.

    FIXDNN_REALENV=/path/to/venv-with-torch-cuda python -m pytest tests/realenv/test_real_fatbin.py

``torch._C._cuda_getArchFlags()`` (what ``torch.cuda.get_arch_list()`` splits) needs no GPU: it is the
TORCH_CUDA_ARCH_LIST the wheel was built with. fixdnn reads the same from the ``.nv_fatbin`` sections of
torch/lib without importing torch.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import run_diagnosis

REALENV = os.environ.get("FIXDNN_REALENV")
pytestmark = [pytest.mark.realenv,
              pytest.mark.skipif(not REALENV, reason="set FIXDNN_REALENV to a venv holding a real torch CUDA build")]


def _arch_flags(python: Path) -> list[str]:
    out = subprocess.run([str(python), "-c", "import torch; print(torch._C._cuda_getArchFlags())"],
                         capture_output=True, text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_compiled_architectures_match_torch(environ):
    python = Path(REALENV) / "bin" / "python"
    facts, _ = run_diagnosis(python, environ)
    kernels = next(k for k in facts.gpu.kernels if k.framework == "torch")
    main = next(lib for lib in kernels.libraries if lib.path.endswith("/libtorch_cuda.so"))
    flags = _arch_flags(python)
    assert list(main.sass) + list(main.ptx) == [f for f in flags if f.startswith("sm_")] + \
        [f for f in flags if f.startswith("compute_")], (main, flags)
    assert set(main.partial).isdisjoint(flags), main.partial  # a few kernels' extra archs: not the build's
