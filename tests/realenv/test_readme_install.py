"""The README's first command on a fresh HOME: fixdnn installed in its own venv, on PATH, diagnosing.

Opt-in (it installs fixdnn's dependencies with the machine's pip configuration):
    FIXDNN_README_INSTALL=1 python -m pytest tests/realenv/test_readme_install.py
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.realenv,
              pytest.mark.skipif(not os.environ.get("FIXDNN_README_INSTALL"),
                                 reason="set FIXDNN_README_INSTALL=1 to install fixdnn as the README says")]


def readme_commands() -> list[str]:
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_first_readme_command_leaves_fixdnn_on_path_and_diagnoses(tmp_path):
    checkout = tmp_path / "checkout"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for rel in files:
        if (ROOT / rel).is_file():
            (checkout / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, checkout / rel)
    home = tmp_path / "home"
    home.mkdir()
    first = readme_commands()[0]
    environ = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX")}
    environ.update(HOME=str(home), PATH="/usr/local/bin:/usr/bin:/bin")
    script = f"{first}; echo \"rc=$?\"; command -v fixdnn"
    proc = subprocess.run(["bash", "-c", script], cwd=checkout, env=environ, capture_output=True, text=True,
                          timeout=900)
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == f"{home}/.local/bin/fixdnn", proc.stdout + proc.stderr
    assert lines[-2] in ("rc=0", "rc=1"), proc.stdout + proc.stderr  # a diagnosis ran: healthy or not
    assert "chosen because:" in proc.stdout
    assert "Traceback" not in proc.stderr
