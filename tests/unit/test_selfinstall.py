"""The command that adds an extra to fixdnn's own installation, for each way fixdnn can be installed."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from fixdnn.cli.selfinstall import install_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("prefix, direct_url, installer, expected", [
    ("/home/me/.local/share/pipx/venvs/fixdnn", None, "pip", "pipx inject fixdnn conda-lock"),
    ("/home/me/.local/share/uv/tools/fixdnn", {"url": "file:///src/fix%20dnn", "dir_info": {}}, "uv",
     "uv tool install --force '/src/fix dnn[conda]'"),
    ("/v", {"url": "file:///src/fixdnn", "dir_info": {"editable": True}}, "pip",
     "/v/bin/python -m pip install -e '/src/fixdnn[conda]'"),
    ("/v", {"url": "file:///src/fixdnn", "dir_info": {}}, "uv",
     "uv pip install --python /v/bin/python '/src/fixdnn[conda]'"),
    ("/v", None, "pip", "/v/bin/python -m pip install 'fixdnn[conda]==1.2.3'"),
])
def test_install_command_for_each_kind_of_install(prefix, direct_url, installer, expected):
    assert install_command("conda", python="/v/bin/python", prefix=prefix, direct_url=direct_url,
                           installer=installer, version="1.2.3") == expected


def test_lock_without_conda_lock_names_the_command_for_this_install(tmp_path):
    """The test venv holds fixdnn installed by pip (editable, from this checkout): that is what is named."""
    dist = metadata.distribution("fixdnn")
    if dist.read_text("direct_url.json") is None:
        pytest.skip("fixdnn is not installed from a checkout here")
    code = ("import sys; sys.modules['conda_lock'] = None; from fixdnn.cli import main; "
            f"sys.exit(main(['lock', '-o', {str(tmp_path / 'lock.yml')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    info = json.loads(dist.read_text("direct_url.json"))
    flag = "-e " if (info.get("dir_info") or {}).get("editable") else ""
    assert proc.stderr == ("fixdnn: conda-lock is not installed (lockfiles need fixdnn's conda extra): "
                           f"{sys.executable} -m pip install {flag}'{ROOT}[conda]'\n")
