"""Shared fixtures: a clean, controlled environment for diagnosing synthetic environments."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from fixdnn.facts import gather
from fixdnn.knowledge import compat as compat_mod
from fixdnn.symptoms.registry import diagnose
from fixdnn.target.host import Host
from fixdnn.target.interpreter import TargetSpec
from tests.envkit.env import EnvBuilder
from tests.envkit.machine import SYSTEM_ROOT_VAR, Machine, hermetic_environ

_BARE: list[str] = []
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


def pytest_configure(config):
    """Hermetic by default: every Host of this session (and every fixdnn subprocess started with a copy of
    this environment or with the ``environ`` fixture) reads /opt, /usr/local, the loader cache, the default
    library directories and /proc/driver from a bare planted machine, never from the one running the tests."""
    # One seed per run for the randomised tests, shared with xdist workers through the environment.
    os.environ.setdefault("FIXDNN_TEST_SEED", str(int.from_bytes(os.urandom(4), "big")))
    if not _BARE:
        _BARE.append(tempfile.mkdtemp(prefix="fixdnn-machine-"))
        Machine(Path(_BARE[0]))
        os.environ[SYSTEM_ROOT_VAR] = _BARE[0]
        # fixdnn's per-user state (integrity caches, journals) of in-process diagnoses, and of every child
        # started with a copy of this environment: the session's own, never the user's ~/.local/state.
        os.environ["FIXDNN_STATE_DIR"] = str(Path(_BARE[0], "user-state"))
        # A PATH of this interpreter's folder and the system folders, not the shell's: what a test's children
        # find (pip, shells, gcc) does not depend on the user's tool managers. pip also runs `rustc --version`
        # for its user agent in every session: through rustup's proxy that is 0.3 s a pip call.
        os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), *SYSTEM_PATH])
        # The temporary files of every child (pip's, those of a process a test kills) go to the session's
        # folder, removed at the end, not to the machine's temp folder; the caches keep their place there.
        for cache in ("FIXDNN_TEST_CACHE", "FIXDNN_ELFKIT_CACHE"):
            os.environ.setdefault(cache, tempfile.gettempdir())
        Path(_BARE[0], "tmp").mkdir()
        os.environ["TMPDIR"] = str(Path(_BARE[0], "tmp"))


def pytest_report_header(config):
    seed = os.environ["FIXDNN_TEST_SEED"]
    return f"fixdnn: random test seed {seed} (replay with FIXDNN_TEST_SEED={seed}); machine {os.environ[SYSTEM_ROOT_VAR]}"


def pytest_unconfigure(config):
    if _BARE:
        shutil.rmtree(_BARE.pop(), ignore_errors=True)


@pytest.fixture
def environ(tmp_path):
    """A minimal process environment: no LD_LIBRARY_PATH, no PYTHONPATH, a private HOME, the bare machine."""
    home = tmp_path / "home"
    home.mkdir()
    return hermetic_environ(home)


@pytest.fixture
def machine(tmp_path):
    """A machine of this test's own, to plant system-wide files in (see tests/envkit/machine.py)."""
    return Machine(tmp_path / "machine")


@pytest.fixture
def torch_env(tmp_path):
    """A healthy torch 2.14.1+cu130 venv (tests/envkit)."""
    return EnvBuilder(tmp_path / "venv").torch_cuda13()


@pytest.fixture
def tf_env(tmp_path):
    """A healthy TensorFlow 2.20 venv with its CUDA 12 wheels (tests/envkit)."""
    return EnvBuilder(tmp_path / "venv").tensorflow_cuda12()


def run_diagnosis(python, environ, *, prefix=None, root=None):
    facts = gather(Host(root=root, environ=environ), TargetSpec(python=str(python) if python else None,
                                                               prefix=str(prefix) if prefix else None))
    return facts, diagnose(facts, compat_mod.load())


def names(symptoms, severity=None):
    return sorted({s.name for s in symptoms if severity is None or s.severity == severity})
