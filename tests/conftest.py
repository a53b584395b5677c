"""Shared fixtures: a clean, controlled environment for diagnosing synthetic environments."""

from __future__ import annotations

import os

import pytest

from fixdnn.facts import gather
from fixdnn.knowledge import compat as compat_mod
from fixdnn.symptoms.registry import diagnose
from fixdnn.target.host import Host
from fixdnn.target.interpreter import TargetSpec
from tests.envkit.env import EnvBuilder


@pytest.fixture
def environ(tmp_path):
    """A minimal process environment: no LD_LIBRARY_PATH, no PYTHONPATH, a private HOME."""
    home = tmp_path / "home"
    home.mkdir()
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8"}


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
