"""Host(system=...): the machine-wide places are read from a planted machine, the target where it is."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from fixdnn.facts import gather
from fixdnn.facts.ldcache import read_ld_cache
from fixdnn.target.host import SYSTEM_ROOT_VAR, Host
from fixdnn.target.interpreter import TargetSpec
from tests.envkit.env import EnvBuilder


def test_system_places_come_from_the_planted_machine(tmp_path, machine):
    machine.write("/opt/vendor/VERSION", "planted\n")
    mine = tmp_path / "env" / "file.txt"
    mine.parent.mkdir()
    mine.write_text("target\n")
    host = Host(system=machine.root)
    assert host.read_text("/opt/vendor/VERSION") == "planted\n"
    assert host.listdir("/opt") == ["vendor"]
    assert host.read_text(str(mine)) == "target\n"  # the target is read where it is
    assert host.on_disk("/opt/vendor/VERSION") == str(machine.root / "opt/vendor/VERSION")


def test_a_link_from_the_target_into_a_system_place_lands_in_the_machine(tmp_path, machine):
    machine.write("/usr/local/cuda-12.8/lib64/libcudart.so.12", b"x")
    link = tmp_path / "env" / "lib" / "libcudart.so.12"
    link.parent.mkdir(parents=True)
    link.symlink_to("/usr/local/cuda-12.8/lib64/libcudart.so.12")
    host = Host(system=machine.root)
    assert host.realpath(str(link)) == "/usr/local/cuda-12.8/lib64/libcudart.so.12"
    assert host.is_file(str(link))
    relative = os.path.relpath(link, os.getcwd())
    assert host.realpath(relative) == "/usr/local/cuda-12.8/lib64/libcudart.so.12"


def test_the_variable_picks_the_machine_and_slash_means_this_one(tmp_path, machine, monkeypatch):
    monkeypatch.setenv(SYSTEM_ROOT_VAR, str(machine.root))
    assert Host().system == str(machine.root)
    assert Host(environ={"PATH": "/usr/bin"}).system == str(machine.root)  # the target's environ is not ours
    assert Host(system="/").system is None
    assert Host(root=tmp_path).system is None  # a --root image brings its own machine
    monkeypatch.delenv(SYSTEM_ROOT_VAR)
    assert Host().system is None


def test_diagnosis_finds_what_is_planted_and_nothing_else(tmp_path, machine, environ):
    env = EnvBuilder(tmp_path / "venv")
    machine.cudnn("/opt/cudnn-9.1", "9.1.0")
    machine.cudnn("/usr/local/cuda-decoy", "9.2.0")
    machine.driver("580.65.06")
    spec = TargetSpec(python=str(env.python))
    planted = gather(Host(environ=environ, system=machine.root), spec, save_cache=False)
    places = {place for c in planted.libraries for place in c.found_in}
    assert {"/opt scan", "/usr/local/cuda-decoy"} <= places
    assert {c.version for c in planted.libraries if c.family == "cudnn"} == {"9.1.0", "9.2.0"}
    assert planted.driver is not None and planted.driver.version == "580.65.06"
    bare = gather(Host(environ=environ), spec, save_cache=False)  # the session's bare machine
    assert bare.libraries == () and bare.driver is None
    assert read_ld_cache(Host()).error == "No such file or directory"


def _tree_of_links(base, draw):
    """Folders a/b/c under ``base`` and links drawn among them: absolute, relative with '..', chains,
    dangling; the paths to resolve walk through them."""
    for d in ("a/b/c", "a/x", "y"):
        (base / d).mkdir(parents=True, exist_ok=True)
    (base / "a/b/c/file").write_text("f")
    targets = [str(base / "a/b"), "../x", "b/c", "c/file", "missing/deeper", "..", str(base / "y/l0"), "l1", "."]
    homes = ["a", "a/b", "a/x", "y"]
    for i, (home, target) in enumerate(draw):
        (base / homes[home % len(homes)] / f"l{i}").symlink_to(targets[target % len(targets)])
    names = [p for p in base.rglob("*")]
    return names + [p / "c" / "file" for p in names] + [p / ".." / "x" for p in names]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=6))
def test_the_mapped_walk_resolves_links_as_the_kernel_does(tmp_path_factory, draw):
    """Outside the system places, Host(system=...) must land where the kernel lands (os.path.realpath),
    for absolute and relative links, '..' after a link, chains, and links that dangle or loop."""
    base = tmp_path_factory.mktemp("links")
    host = Host(system=str(tmp_path_factory.mktemp("machine")))
    for path in _tree_of_links(base, draw):
        try:
            expect = os.path.realpath(path, strict=True)
        except OSError:
            continue  # dangling or looping: the kernel has no answer to compare with
        assert host.realpath(str(path)) == expect, path
        assert host.on_disk(str(path)) == expect
