"""Opt-in: the whole loop on a real torch CUDA venv, undone by fixdnn itself at the end.

    FIXDNN_REALENV=/path/to/venv-with-torch-cuda python -m pytest tests/realenv

1. fixdnn removes the real nvidia-cudnn wheel in a transaction of its own (a hand-made plan);
2. the diagnosis says cudnn-missing and `--dry-run` plans the exact pin torch declares, checked with pip;
3. `fixdnn apply --yes` installs it through the machine's pip configuration and verifies;
4. `fixdnn verify` loads the real cuDNN (cudnnGetVersion) and runs conv2d on the CPU;
5. `fixdnn rollback` twice: every file of the venv is byte-identical to the start.

Step 3 fetches the ~1 GB cuDNN wheel from wherever pip is configured to look (a local wheel folder on
the development machines); that is why this test is opt-in.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fixdnn.model.actions import Action, Plan
from fixdnn.repair.apply import Target, apply_plan

REALENV = os.environ.get("FIXDNN_REALENV")
pytestmark = [pytest.mark.realenv,
              pytest.mark.skipif(not REALENV, reason="set FIXDNN_REALENV to a venv holding a real torch CUDA build")]
FIXDNN = [sys.executable, "-c", "import sys; from fixdnn.cli import main; sys.exit(main())"]


def tree(prefix: Path) -> dict[str, str]:
    """Every file and link of the environment by content; ``<prefix>/.fixdnn`` (its journal and lock, kept
    after a rollback like conda-meta/history) is not part of it."""
    out = {}
    for root, dirs, files in os.walk(prefix):
        if Path(root) == Path(prefix) and ".fixdnn" in dirs:
            dirs.remove(".fixdnn")
        dirs.sort()
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = os.path.join(root, name)
            if os.path.islink(path):
                out[path] = "link:" + os.readlink(path)
                continue
            h = hashlib.sha256()
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
            out[path] = h.hexdigest()
    return out


def fixdnn(*args, env):
    return subprocess.run(FIXDNN + list(args), capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.changes_realenv
def test_real_remove_diagnose_plan_apply_verify_rollback(tmp_path):
    prefix = Path(REALENV).resolve()
    python = str(prefix / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "PYTHONPATH")}
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    facts = json.loads(fixdnn("--python", python, "facts", env=env).stdout)
    wheel = next(d for d in facts["distributions"] if d["name"].startswith("nvidia-cudnn-cu"))
    before = tree(prefix)

    site = tuple(facts["target"]["site_dirs"])
    os.environ["XDG_STATE_HOME"] = env["XDG_STATE_HOME"]  # apply_plan runs in this process
    try:
        removed = apply_plan(Plan((Action("pip-uninstall", packages=(wheel["name"],)),)),
                             Target(str(prefix), python, site))
        assert removed.outcome == "applied", removed

        broken = json.loads(fixdnn("--python", python, "--json", env=env).stdout)
        assert "cudnn-missing" in {s["name"] for s in broken["symptoms"]}
        planned = json.loads(fixdnn("--python", python, "--dry-run", "--json", env=env).stdout)["plan"]
        [step] = [a for a in planned["actions"] if "cudnn-missing" in a["fixes"]]
        assert step["kind"] == "pip-install" and step["available"] is True
        assert step["command"].endswith(f"{wheel['name']}=={wheel['version']}")

        applied = fixdnn("--python", python, "apply", "--yes", env=env)
        assert applied.returncode == 0, applied.stderr + applied.stdout
        healthy = json.loads(fixdnn("--python", python, "--json", env=env).stdout)
        assert [s for s in healthy["symptoms"] if s["severity"] == "error"] == []

        verified = fixdnn("--python", python, "--json", "verify", env=env)
        assert verified.returncode == 0, verified.stdout
        text = fixdnn("--python", python, "verify", env=env).stdout
        assert "cudnnGetVersion() = " in text and "conv2d on the CPU works" in text
    finally:
        for _ in range(2):  # the apply, then fixdnn's own removal
            fixdnn("--python", python, "rollback", env=env)
    assert tree(prefix) == before
