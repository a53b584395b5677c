"""FDN301-FDN304: LD_LIBRARY_PATH and LD_PRELOAD, with real directories and real mode bits."""

from __future__ import annotations

import os
import shutil

import pytest

import fixdnn.knowledge.compat
from fixdnn.facts import gather
from fixdnn.symptoms.registry import diagnose
from fixdnn.target.host import Host
from fixdnn.target.interpreter import TargetSpec
from tests.envkit import cpu as cpukit
from tests.envkit.env import EnvBuilder


@pytest.fixture
def env(tmp_path):
    return EnvBuilder(tmp_path / "e", real_python=False)


def run(env, extra):
    facts = gather(Host(environ={"PATH": "/usr/bin:/bin", **extra}), TargetSpec(prefix=str(env.prefix)))
    found: dict[str, list] = {}
    for s in diagnose(facts, fixdnn.knowledge.compat.load()):
        found.setdefault(s.name, []).append(s)
    return facts, found


def private_dir(path):
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)
    return str(path)


def test_missing_dir(env, tmp_path):
    good = private_dir(tmp_path / "good lib")
    (tmp_path / "a file").write_text("")
    _, found = run(env, {"LD_LIBRARY_PATH": f"{good}:{tmp_path}/gone:{tmp_path}/a file"})
    syms = found["ld-library-path-missing-dir"]
    assert [(s.evidence["index"], s.evidence["exists"]) for s in syms] == [(1, False), (2, True)]
    _, found = run(env, {"LD_LIBRARY_PATH": good})
    assert "ld-library-path-missing-dir" not in found and "ld-library-path-unsafe-entry" not in found


@pytest.mark.parametrize("value, index, kind", [(":{d}", 0, "empty"), ("{d}:", 1, "empty"), ("{d}::{d}", 1, "empty"),
                                                ("lib:{d}", 0, "relative"), ("{d};./build", 1, "relative")])
def test_unsafe_entry(env, tmp_path, value, index, kind):
    d = private_dir(tmp_path / "l")
    _, found = run(env, {"LD_LIBRARY_PATH": value.format(d=d)})
    (sym,) = found["ld-library-path-unsafe-entry"]
    assert sym.severity == "error" and (sym.evidence["index"], sym.evidence["kind"]) == (index, kind)


def test_empty_variable_is_not_an_entry(env):
    _, found = run(env, {"LD_LIBRARY_PATH": ""})
    assert "ld-library-path-unsafe-entry" not in found


def test_writable_dir(env, tmp_path):
    base = private_dir(tmp_path / "base")
    world = tmp_path / "base/world"
    world.mkdir()
    os.chmod(world, 0o777)
    sticky_parent = tmp_path / "base/shared"
    sticky_parent.mkdir()
    os.chmod(sticky_parent, 0o1777)
    inside = sticky_parent / "mine"
    inside.mkdir()
    os.chmod(inside, 0o755)
    _, found = run(env, {"LD_LIBRARY_PATH": f"{world}:{inside}:{base}"})
    syms = found["ld-library-path-writable-dir"]
    assert [s.evidence["index"] for s in syms] == [0]  # a sticky parent protects 'mine'
    assert "world-writable" in syms[0].evidence["writable"][0]
    os.chmod(sticky_parent, 0o777)  # without the sticky bit anyone can rename 'mine' away
    _, found = run(env, {"LD_LIBRARY_PATH": str(inside)})
    assert str(sticky_parent) in found["ld-library-path-writable-dir"][0].evidence["writable"][0]


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to give a directory to a foreign group")
def test_group_writable_by_a_foreign_group(env, tmp_path):
    d = tmp_path / "grp"
    d.mkdir()
    foreign = max(os.getgroups() + [os.getgid()]) + 4242
    os.chown(d, -1, foreign)
    os.chmod(d, 0o775)
    _, found = run(env, {"LD_LIBRARY_PATH": str(d)})
    assert f"writable by group {foreign}" in found["ld-library-path-writable-dir"][0].evidence["writable"][0]
    os.chmod(d, 0o755)
    _, found = run(env, {"LD_LIBRARY_PATH": str(d)})
    assert "ld-library-path-writable-dir" not in found


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_ld_preload_dnn(env, tmp_path):
    iomp = cpukit.omp_runtime(tmp_path / "preload☃" / "libiomp5.so")
    malloc = cpukit.build_so(tmp_path / "preload☃" / "libjemalloc.so.2", "libjemalloc.so.2")
    facts, found = run(env, {"LD_PRELOAD": f"{malloc} {iomp}:libcudnn.so.9"})
    syms = found["ld-preload-dnn"]
    assert [s.evidence["entry"] for s in syms] == [str(iomp), "libcudnn.so.9"]
    # the preloaded runtime is in the simulated process
    assert [u.consumer for u in facts.cpu.uses] == ["LD_PRELOAD"]
    _, found = run(env, {"LD_PRELOAD": str(malloc)})
    assert "ld-preload-dnn" not in found


def test_hostile_entries_do_not_break_anything(env, tmp_path):
    weird = tmp_path / "it's a \"dir\" $HOME ☃"
    weird.mkdir()
    os.chmod(weird, 0o755)
    _, found = run(env, {"LD_LIBRARY_PATH": f"{weird}:{tmp_path}/new\nline", "LD_PRELOAD": "\n\t"})
    assert [s.evidence["entry"] for s in found["ld-library-path-missing-dir"]] == [f"{tmp_path}/new\nline"]
    assert "check-failed" not in found
