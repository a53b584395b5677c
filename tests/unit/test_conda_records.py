"""conda-meta records: packages with versions and channels, per-file owners and hashes, cuDNN from conda."""

from __future__ import annotations

import shutil

import pytest

import fixdnn.knowledge.compat
from fixdnn.facts import conda, dumps, gather, loads_json
from fixdnn.symptoms.registry import diagnose
from fixdnn.target.host import Host
from fixdnn.target.interpreter import TargetSpec
from tests.envkit import cpu as cpukit
from tests.envkit.env import EnvBuilder, stray_cudnn

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build real ELF objects")


def run(env, extra=None):
    facts = gather(Host(environ={"PATH": "/usr/bin:/bin", **(extra or {})}), TargetSpec(prefix=str(env.prefix)))
    return facts, {s.name: s for s in diagnose(facts, fixdnn.knowledge.compat.load())}


@pytest.mark.parametrize("record, short", [
    ({"channel": "conda-forge/linux-64"}, "conda-forge"),
    ({"channel": "pkgs/main/linux-64"}, "main"),
    ({"channel": "pytorch/noarch/"}, "pytorch"),
    ({"schannel": "nvidia", "channel": "whatever/linux-64"}, "nvidia"),
    ({"channel": ""}, None), ({}, None), ({"channel": 7}, None),
])
def test_short_channel(record, short):
    assert conda.short_channel(record) == short


def test_openmp_flavour_from_mutex_build():
    pkg = lambda build: conda.CondaPackage("_openmp_mutex", "4.5", build, "conda-forge", 1, "/p")  # noqa: E731
    assert conda.openmp_flavour((pkg("2_gnu"),)) == "gnu"
    assert conda.openmp_flavour((pkg("2_kmp_llvm"),)) == "llvm"
    assert conda.openmp_flavour(()) is None


def test_packages_owners_hashes_and_bad_records(tmp_path):
    env = EnvBuilder(tmp_path / "cönda env", real_python=False, conda=True)
    lib = env.prefix / "lib"
    cpukit.omp_runtime(lib / "libomp.so")
    (lib / "libgomp.so.1").symlink_to("libomp.so")
    cpukit.conda_record(env.prefix, "llvm-openmp", "18.1.8", "hf5423f3_1", "conda-forge", ["lib/libomp.so"])
    cpukit.conda_record(env.prefix, "_openmp_mutex", "4.5", "2_kmp_llvm", "conda-forge", ["lib/libgomp.so.1"],
                        build_number=2)
    cpukit.conda_record(env.prefix, "zlib", "1.3.1", "h4ab18f5_1", "conda-forge", ["lib/libz.so.1"], paths_data=False)
    (env.prefix / "conda-meta/broken-1-0.json").write_text("{not json")
    (env.prefix / "conda-meta/list-1-0.json").write_text("[1, 2]")
    cpukit.consumer(env.site / "torch/lib/libtorch_cpu.so", "libtorch_cpu.so", ["libgomp.so.1"],
                    rpath="$ORIGIN/../../../..")
    facts, _ = run(env)
    names = {p.name: p for p in facts.conda_packages}
    assert set(names) == {"llvm-openmp", "_openmp_mutex", "zlib"}
    assert (names["_openmp_mutex"].build, names["_openmp_mutex"].build_number, names["_openmp_mutex"].channel) == \
        ("2_kmp_llvm", 2, "conda-forge")
    assert names["zlib"].files == 1 and names["zlib"].prefix == str(env.prefix)
    assert facts.cpu.conda_openmp == "llvm"
    (omp,) = [lib for lib in facts.cpu.libraries if lib.name == "libomp"]
    assert (omp.vendor, omp.owner, omp.version) == ("llvm", "conda:llvm-openmp 18.1.8", "18.1.8")
    assert omp.sha256 == cpukit.sha256_file(lib / "libomp.so")
    assert [u.path for u in facts.cpu.uses] == [str(lib / "libomp.so")]
    bad = sorted(u.what for u in facts.unknowns if "conda record" in u.what)
    assert len(bad) == 2 and "broken-1-0.json" in bad[0] and "list-1-0.json" in bad[1]
    assert loads_json(dumps(facts)) == facts


def test_conda_cudnn_is_owned_by_its_package(tmp_path):
    env = EnvBuilder(tmp_path / "c", real_python=False, conda=True)
    lib = stray_cudnn(env.prefix, "9.1.0")
    files = sorted(f"lib/{p.name}" for p in lib.iterdir()) + ["include/cudnn_version.h"]
    cpukit.conda_record(env.prefix, "cudnn", "9.1.0.70", "h3c4c7d2_1", "conda-forge", files)
    facts, _ = run(env)
    shim = [c for c in facts.copies("cudnn") if c.realpath.endswith("libcudnn.so.9.1.0")]
    assert shim and shim[0].owner == "conda:cudnn 9.1.0.70" and shim[0].version == "9.1.0"
    assert any(p.name == "cudnn" and p.version == "9.1.0.70" for p in facts.conda_packages)


def test_no_conda_meta_no_packages(tmp_path):
    env = EnvBuilder(tmp_path / "v", real_python=False)
    facts, _ = run(env)
    assert facts.conda_packages == ()
