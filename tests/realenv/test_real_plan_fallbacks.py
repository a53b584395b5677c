"""Opt-in: the plan's offline fallback on a real torch CUDA venv, undone by fixdnn itself at the end.

    FIXDNN_REALENV=/path/to/venv-with-torch-cuda python -m pytest tests/realenv

The real cuDNN wheel's folder is moved out of the venv (a rename: no file is written) to a folder no search
path reaches, as a tarball under /opt would be, and found by fixdnn through CUDNN_PATH. Then:

1. the diagnosis says cudnn-not-on-search-path; `--offline --dry-run` cannot fetch the pin, so it plans
   the copy on disk, proven in the model;
2. `fixdnn --offline apply --yes` puts it first on LD_LIBRARY_PATH in the activation scripts, and the
   verification (which runs the real torch with those scripts' environment) passes;
3. `fixdnn verify` loads the real cuDNN from the moved folder;
4. `fixdnn rollback`, then the folder moved back: every file of the venv is byte-identical to the start.

Use a copy (``cp -al``) of a shared venv: the test renames a folder inside the venv it is given.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.realenv.test_real_repair import FIXDNN, REALENV, fixdnn, tree

pytestmark = [pytest.mark.realenv,
              pytest.mark.skipif(not REALENV, reason="set FIXDNN_REALENV to a venv holding a real torch CUDA build")]
assert FIXDNN


@pytest.mark.changes_realenv
def test_real_offline_copy_on_disk_is_planned_applied_verified_and_rolled_back(tmp_path):
    prefix = Path(REALENV).resolve()
    python = str(prefix / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "PYTHONPATH", "VIRTUAL_ENV")
           and not k.startswith("PIP_")}
    # No pip configuration: a machine whose pip reads a local mirror (file://, find-links) can still fetch the
    # pin offline, and the plan then rightly reinstalls; here only the copy on disk is left.
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), PIP_CONFIG_FILE=os.devnull)
    facts = json.loads(fixdnn("--python", python, "facts", env=env).stdout)
    site = Path(next(d for d in facts["distributions"] if d["name"].startswith("nvidia-cudnn-cu"))["location"])
    before = tree(prefix)
    wheel_dir = site / "nvidia" / "cudnn"
    opt = tmp_path / "opt" / "cudnn"
    opt.parent.mkdir()
    os.rename(wheel_dir, opt)
    env["CUDNN_PATH"] = str(opt)
    try:
        broken = json.loads(fixdnn("--python", python, "--json", env=env).stdout)
        assert "cudnn-not-on-search-path" in {s["name"] for s in broken["symptoms"]}, broken["symptoms"]
        planned = json.loads(fixdnn("--python", python, "--offline", "--dry-run", "--json", env=env).stdout)["plan"]
        [step] = [a for a in planned["actions"] if a["kind"] == "path-prepend"]
        assert (step["value"], step["proven"]) == (str(opt / "lib"), True), planned

        applied = fixdnn("--python", python, "--offline", "apply", "--yes", env=env)
        assert applied.returncode == 0, applied.stderr + applied.stdout
        text = fixdnn("--python", python, "verify", env=env).stdout
        assert "cudnnGetVersion() = " in text and str(opt) in text, text
    finally:
        fixdnn("--python", python, "rollback", env=env)
        os.rename(opt, wheel_dir)
        shutil.rmtree(tmp_path / "state", ignore_errors=True)
    assert tree(prefix) == before
