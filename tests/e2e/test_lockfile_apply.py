"""Lock, drift, repair, end to end: `fixdnn lock -o`, a real pip upgrade, `fixdnn --lock` finds the drift,
`fixdnn --lock ... apply --yes` restores the locked cuDNN wheel from the local folder index (never the network)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fixdnn.facts import lockfile

if not lockfile.available():  # conda-lock's models, as fixdnn imports them (not its whole CLI)
    pytest.skip("conda-lock is not installed", allow_module_level=True)

from tests.e2e.test_apply_kit import cli_env, copy_venv, index_dir, pip_into, site_of  # noqa: E402
from tests.envkit.cli import run_fixdnn

HOSTILE = "lock env with space 'q' é"


def cli(env: dict, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run_fixdnn(args, env, cwd=cwd, timeout=300)


def cudnn_versions(prefix: Path) -> list[str]:
    return sorted(p.name for p in site_of(prefix).glob("nvidia_cudnn_cu12-*.dist-info"))


@pytest.fixture()
def world(tmp_path):
    index = index_dir()
    env = cli_env(tmp_path / "state", index)
    # the planner uses the target's own pip here: a venv with the interpreter's bundled one
    prefix = copy_venv(tmp_path / HOSTILE, "cudnn910-pip")
    return prefix, env


def test_lock_drift_apply_restores_the_locked_version(world, tmp_path):
    prefix, env = world
    python = str(prefix / "bin/python")
    lock = tmp_path / "locks dir" / "conda-lock.yml"
    lock.parent.mkdir()

    res = cli(env, "--python", python, "lock", "-o", str(lock))
    assert res.returncode == 0, res.stderr
    assert "pip packages for linux-64" in res.stdout
    text = lock.read_text()
    assert "name: nvidia-cudnn-cu12" in text and "version: 9.1.0.70" in text

    healthy = cli(env, "--python", python, "--lock", str(lock), "--json")
    assert "lockfile-drift" not in healthy.stdout, healthy.stdout

    # drift: someone upgrades cuDNN by hand
    up = pip_into(python, env, "install", "nvidia-cudnn-cu12==9.3.0.75", check=False)
    assert up.returncode == 0, up.stderr
    assert cudnn_versions(prefix) == ["nvidia_cudnn_cu12-9.3.0.75.dist-info"]

    found = cli(env, "--python", python, "--lock", str(lock), "--json")
    assert found.returncode == 1, found.stderr
    drift = [s for s in json.loads(found.stdout)["symptoms"] if s["name"] == "lockfile-drift"]
    assert len(drift) == 1
    ev = drift[0]["evidence"]
    assert (ev["name"], ev["manager"], ev["locked_version"], ev["installed_version"]) == \
        ("nvidia-cudnn-cu12", "pip", "9.1.0.70", "9.3.0.75")

    applied = cli(env, "--python", python, "--lock", str(lock), "apply", "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "nvidia-cudnn-cu12==9.1.0.70" in applied.stdout and "--no-deps" in applied.stdout
    assert cudnn_versions(prefix) == ["nvidia_cudnn_cu12-9.1.0.70.dist-info"]

    after = cli(env, "--python", python, "--lock", str(lock), "--json")
    assert "lockfile-drift" not in after.stdout

    # and the repair is a transaction like any other: rollback brings the drifted version back
    back = cli(env, "--prefix", str(prefix), "rollback")
    assert back.returncode == 0, back.stderr
    assert cudnn_versions(prefix) == ["nvidia_cudnn_cu12-9.3.0.75.dist-info"]
