"""The sdist holds what a wheel needs and no tests; a wheel built from it alone installs and runs."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("hatchling")

ROOT = Path(__file__).resolve().parents[2]


def _hook(hook: str, source: Path, out: Path) -> Path:
    """Run a PEP 517 hook of hatchling in ``source`` (no network: the backend is already installed)."""
    code = f"import hatchling.build as b; print(b.{hook}({str(out)!r}))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return out / proc.stdout.strip().splitlines()[-1]


def test_sdist_without_tests_builds_a_wheel_that_runs(tmp_path):
    sdist = _hook("build_sdist", ROOT, tmp_path)
    with tarfile.open(sdist) as tar:
        names = [n.split("/", 1)[1] for n in tar.getnames() if "/" in n]
        tar.extractall(tmp_path / "unpacked", filter="data")
    assert not [n for n in names if n.startswith(("tests/", "bench/", ".ci/"))]
    assert {"LICENSE", "README.md", "pyproject.toml", "fixdnn/cli/schemas.py"} <= set(names)
    assert any(n.startswith("rules/remedies/") for n in names)

    (source,) = (tmp_path / "unpacked").iterdir()
    wheel = _hook("build_wheel", source, tmp_path / "dist")
    with zipfile.ZipFile(wheel) as zf:
        inside = zf.namelist()
        meta = zf.read(next(n for n in inside if n.endswith(".dist-info/METADATA"))).decode()
    assert any(n.startswith("fixdnn/rules/remedies/") for n in inside)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in inside)
    assert "License-Expression: MIT" in meta and "Classifier: Operating System :: POSIX :: Linux" in meta
    assert "Project-URL: Documentation, " in meta
    assert "pypi" not in meta.lower()

    # installed alone (its dependencies come from the test venv through system site packages)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(env_dir)
    site = subprocess.run([str(env_dir / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    deps = subprocess.run([sys.executable, "-c", "import typer, sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "deps.pth").write_text(deps + "\n")
    proc = subprocess.run([str(env_dir / "bin/python"), "-I", "-m", "fixdnn", "symptoms", "--json"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert '"fixdnn.symptoms/1"' in proc.stdout
    where = subprocess.run([str(env_dir / "bin/python"), "-I", "-c", "import fixdnn; print(fixdnn.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path).stdout
    assert where.startswith(site)  # the installed copy ran, not the checkout
