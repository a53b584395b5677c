"""Fixtures shared by the e2e tests."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest


@pytest.fixture()
def other_filesystem(tmp_path) -> Path:
    """A fresh folder path (not yet created) on another filesystem than ``tmp_path``: tmpfs at /dev/shm. The
    test is skipped where there is none; the folder is removed afterwards."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem at /dev/shm")
    folder = shm / f"fixdnn-test-{os.getpid()}-{time.monotonic_ns()}"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)
