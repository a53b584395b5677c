"""Host(system=...): the machine-wide places are read from a planted machine, the target where it is."""

from __future__ import annotations

import os

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
