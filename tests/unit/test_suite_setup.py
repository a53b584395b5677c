"""The suite's own set-up: which fixdnn the tests start, and where bytecode goes (tests/_bytecode.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SHOW = "import sys, tests._bytecode as b; print(sys.pycache_prefix); print(sys.dont_write_bytecode)"


def _bytecode_settings(tmp_path: Path, **env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([sys.executable, "-c", SHOW], env={**base, "FIXDNN_TEST_CACHE": str(tmp_path), **env},
                          cwd=TESTS.parent, capture_output=True, text=True, check=True)
    return proc.stdout.splitlines()


def test_no_bytecode_beside_the_sources_goes_to_the_tests_cache(tmp_path):
    prefix, dont_write = _bytecode_settings(tmp_path, PYTHONDONTWRITEBYTECODE="1")
    assert Path(prefix) == tmp_path / f"fixdnn-test-cache-{os.getuid()}" / "pycache" and dont_write == "False"


def test_bytecode_settings_are_left_alone_otherwise(tmp_path):
    assert _bytecode_settings(tmp_path) == ["None", "False"]
    chosen = str(tmp_path / "mine")
    assert _bytecode_settings(tmp_path, PYTHONDONTWRITEBYTECODE="1", PYTHONPYCACHEPREFIX=chosen) == [chosen, "True"]


def test_bytecode_beside_the_sources_is_read_when_current_and_never_written(tmp_path):
    """Under the prefix, a module whose ``__pycache__`` bytecode is current is loaded from it (nothing compiled
    into the prefix); one whose bytecode is stale is compiled into the prefix, and the stale file is untouched."""
    import py_compile

    src = tmp_path / "pkg" / "fdn_mod.py"
    src.parent.mkdir()
    src.write_text("VALUE = 1\n")
    beside = src.parent / "__pycache__" / f"fdn_mod.{sys.implementation.cache_tag}.pyc"
    py_compile.compile(str(src), cfile=str(beside), doraise=True)
    show = "import tests._bytecode, fdn_mod; print(fdn_mod.__spec__.cached); print(fdn_mod.VALUE)"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env = {**base, "FIXDNN_TEST_CACHE": str(tmp_path / "cache"), "PYTHONDONTWRITEBYTECODE": "1",
           "PYTHONPATH": f"{TESTS.parent}{os.pathsep}{src.parent}"}

    def load() -> list[str]:
        return subprocess.run([sys.executable, "-c", show], env=env, capture_output=True, text=True,
                              check=True).stdout.splitlines()

    prefix = tmp_path / "cache" / f"fixdnn-test-cache-{os.getuid()}" / "pycache"
    assert load() == [str(beside), "1"]
    assert not list(prefix.rglob("fdn_mod*"))
    stale = beside.read_bytes()
    src.write_text("VALUE = 22\n")  # another size: the bytecode beside it no longer matches
    cached, value = load()
    assert value == "22" and Path(cached).is_relative_to(prefix) and Path(cached).is_file()
    assert beside.read_bytes() == stale


def test_no_test_starts_the_checkouts_own_venv():
    """fixdnn under test is the one of the interpreter running the tests: CI runs the suite from .venv-3.10 and
    .venv-3.13 too, where ``ROOT/.venv/bin/fixdnn`` would be the default Python's copy (tests start it through
    tests/envkit/cli.py, or ``sys.executable``)."""
    found = [f"{path.relative_to(TESTS)}:{n}" for path in sorted(TESTS.rglob("*.py"))
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if '".venv/bin' in line and path.name != Path(__file__).name]
    assert found == []
