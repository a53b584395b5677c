"""The opt-in real-environment tests share the real venvs they are given (FIXDNN_REALENV...), and three of
them change one for a while (remove a wheel, apply, roll back). Under pytest-xdist a diagnosis of the same
venv running meanwhile would see it half repaired, so every test here holds a lock on the real venvs:
shared for the tests that read them, alone for a test marked ``changes_realenv``."""

from __future__ import annotations

import fcntl

import pytest

from tests import _cache


@pytest.fixture(autouse=True)
def _real_venvs_lock(request):
    alone = request.node.get_closest_marker("changes_realenv") is not None
    folder = _cache.root()  # shared by every run on this machine, whatever its TMPDIR
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "realenv.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        yield
