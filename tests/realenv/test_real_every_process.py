"""Opt-in: a real torch CUDA venv repaired for every process (plain env/bin/python, a real Jupyter kernel),
then undone byte for byte.

    FIXDNN_REALENV=/path/to/copy-of-venv-with-torch-cuda python -m pytest tests/realenv

The real cuDNN wheel's folder is moved out of the venv (a rename: no file is written) to ``<tmp>/opt/cudnn``,
where no search path reaches it, as a tarball under /opt would be; fixdnn finds it through CUDNN_PATH. A
kernelspec in the test's own Jupyter data dir runs the venv's interpreter (ipykernel comes from the test
extra, linked into one folder as for tests/e2e/test_kernels.py, through a ``.pth`` line). Then:

1. a plain ``env/bin/python -c 'import torch'`` (no activation) and the kernel fail: libcudnn.so.9 is not found;
2. ``fixdnn --offline apply --yes`` plans the copy on disk: LD_LIBRARY_PATH for shells and the kernelspec,
   the in-process preload for every interpreter;
3. the plain interpreter and the real kernel load torch with cuDNN 9.24 from ``<tmp>/opt``; ``fixdnn verify``
   passes for the activated shell, the plain interpreter and the kernel, with no model mismatch;
4. ``fixdnn rollback``: the venv and the kernelspec are byte-identical to the start.

Use a copy (``cp -al``) of a shared venv: the test renames a folder inside the venv it is given.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.test_kernels import jupyter_site  # noqa: F401 - the session fixture
from tests.realenv.test_real_repair import REALENV, fixdnn, tree

pytestmark = [pytest.mark.realenv,
              pytest.mark.skipif(not REALENV, reason="set FIXDNN_REALENV to a venv holding a real torch CUDA build")]

IMPORT = "import torch; print('cudnn', torch.backends.cudnn.version())"


def kernel_cudnn(python: str, kernel_dir: Path, env: dict) -> dict:
    from fixdnn.probes import script

    cfg = json.dumps({"kernel_dir": str(kernel_dir), "frameworks": ["torch"], "timeout": 300})
    out = subprocess.run([python, "-c", script("kernel"), cfg], env=env, capture_output=True, text=True, timeout=400)
    events = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    done = [e for e in events if e.get("step") == "execute" and "ok" in e]
    return (done[-1].get("value") or {}).get("frameworks", {}).get("torch", {}) if done else {"error": out.stderr[-500:]}


@pytest.mark.changes_realenv
def test_real_repair_reaches_plain_python_and_a_real_kernel(tmp_path, jupyter_site):  # noqa: F811
    prefix = Path(REALENV).resolve()
    python = str(prefix / "bin" / "python")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "XDG_STATE_HOME": str(tmp_path / "state"), "JUPYTER_DATA_DIR": str(tmp_path / "jupyter")}
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    kernel = tmp_path / "jupyter/kernels/real"
    kernel.mkdir(parents=True)
    spec = kernel / "kernel.json"
    spec.write_text(json.dumps({"argv": [python, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                                "display_name": "real", "language": "python"}, indent=1) + "\n")
    spec_before = spec.read_bytes()
    jupyter_pth = site / "zz-fixdnn-test-jupyter.pth"
    opt = tmp_path / "opt" / "cudnn"
    opt.parent.mkdir()
    before = tree(prefix)
    os.rename(site / "nvidia" / "cudnn", opt)
    jupyter_pth.write_text(str(jupyter_site) + "\n")
    try:
        plain = subprocess.run([python, "-c", IMPORT], env=env, capture_output=True, text=True, timeout=300)
        assert plain.returncode != 0 and "libcudnn.so.9" in plain.stderr, plain.stderr[-800:]
        assert kernel_cudnn(python, kernel, env).get("import") is False

        applied = fixdnn("--python", python, "--offline", "apply", "--yes", env={**env, "CUDNN_PATH": str(opt)})
        assert applied.returncode == 0, applied.stderr + applied.stdout
        assert "kernelspec real:" in applied.stdout and "OUTSIDE the environment" in applied.stdout

        plain = subprocess.run([python, "-c", IMPORT], env=env, capture_output=True, text=True, timeout=300)
        assert plain.returncode == 0 and plain.stdout.split()[-2:] == ["cudnn", "92400"], plain.stderr[-800:]
        got = kernel_cudnn(python, kernel, env)
        assert got.get("import") is True and got.get("cudnn") == 92400, got
        assert json.loads(spec.read_text())["env"]["LD_LIBRARY_PATH"] == str(opt / "lib")

        out = json.loads(fixdnn("--python", python, "--json", "verify", env={**env, "CUDNN_PATH": str(opt)}).stdout)
        passed = "\n".join(out["passed"])
        assert "plain env/bin/python, no activation: torch: cuDNN version query works (92400)" in passed
        assert "kernel real" in passed and "(cuDNN 92400)" in passed
        assert [f for f in out["findings"] if f["severity"] != "info"] == [], out["findings"]
    finally:
        fixdnn("--python", python, "rollback", env=env)
        jupyter_pth.unlink(missing_ok=True)
        os.rename(opt, site / "nvidia" / "cudnn")
        shutil.rmtree(tmp_path / "state", ignore_errors=True)
    assert spec.read_bytes() == spec_before
    assert tree(prefix) == before
