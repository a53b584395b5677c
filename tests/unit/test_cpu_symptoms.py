"""FDN202-FDN207 and the CPU facts, on synthetic environments built from real files (FDN201: tests/e2e)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest

import fixdnn.knowledge.compat
from fixdnn.facts import dumps, gather, loads_json
from fixdnn.facts.cpu import kmp_true, load_rules
from fixdnn.knowledge.compat import RulesError
from fixdnn.symptoms.registry import diagnose
from fixdnn.target.host import Host
from fixdnn.target.interpreter import TargetSpec
from tests.envkit import cpu as cpukit
from tests.envkit.env import EnvBuilder

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build real ELF objects")


def run(env, extra=None, *, python=True):
    environ = {"PATH": "/usr/bin:/bin", **(extra or {})}
    spec = TargetSpec(python=str(env.python)) if python else TargetSpec(prefix=str(env.prefix))
    facts = gather(Host(environ=environ), spec)
    return facts, {s.name: s for s in diagnose(facts, fixdnn.knowledge.compat.load())}


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    return EnvBuilder(tmp_path_factory.mktemp("cpu") / "vénv")


# -- rules and facts ---------------------------------------------------------------------------------------

def test_kmp_true_follows_kmp_str_match_true():
    rules = load_rules()
    for value in ("TRUE", "true", "t", "T", "1", "10", "yes", "y", "on", "ON", ".t", ".true.", "Enabled", "truex"):
        assert kmp_true(rules, value), value
    for value in (None, "", "0", "false", "o", "tx", "no", "enable", "enabledx", " true", "\ntrue", "ｔｒｕｅ"):
        assert not kmp_true(rules, value), value


def test_malformed_rules_name_file_and_line(tmp_path):
    text = (fixdnn.knowledge.compat.rules_dir() / "compat/cpu.toml").read_text()
    bad = tmp_path / "cpu.toml"
    bad.write_text(text.replace('kind = "int-list"', 'kind = "float"'))
    with pytest.raises(RulesError, match=r"cpu\.toml:\d+: kind must be"):
        load_rules(bad)
    bad.write_text(text.replace("pattern = '^libiomp5", "pattern = '^(libiomp5"))
    with pytest.raises(RulesError, match=r"cpu\.toml:\d+: pattern = .* is not a regular expression"):
        load_rules(bad)


def test_facts_round_trip_and_owner_of_pip_data_files(venv):
    cpukit.add_mkl_wheel(venv)
    cpukit.add_intel_openmp_wheel(venv)
    facts, _ = run(venv)
    again = loads_json(dumps(facts))
    assert again == facts
    rt = next(lib for lib in facts.cpu.libraries if lib.name == "libmkl_rt")
    assert (rt.role, rt.major, rt.owner, rt.version) == ("rt", "2", "pip:mkl 2024.2.0", "2024.2.0")
    dispatch = {lib.name for lib in facts.cpu.libraries if lib.role == "dispatch"}
    assert dispatch == {"libmkl_def", "libmkl_avx2", "libmkl_avx512"}
    assert facts.cpu.cpu_count and facts.cpu.cpu_count >= 1


def test_vendor_is_the_real_file_not_the_link_name(tmp_path):
    env = EnvBuilder(tmp_path / "e", real_python=False)
    lib = env.site / "torch/lib"
    cpukit.omp_runtime(lib / "libomp.so")
    (lib / "libgomp.so.1").symlink_to("libomp.so")  # conda-forge's _openmp_mutex *_llvm layout
    cpukit.consumer(lib / "libtorch_cpu.so", "libtorch_cpu.so", ["libgomp.so.1"], rpath="$ORIGIN")
    facts, _ = run(env, python=False)
    loaded = facts.cpu.loaded_runtimes()
    assert [(r.vendor, r.name) for r in loaded] == [("llvm", "libomp")]


# -- FDN202 -----------------------------------------------------------------------------------------------

def test_kmp_duplicate_lib_ok_flagged_and_healthy(tmp_path):
    env = EnvBuilder(tmp_path / "e", real_python=False)
    facts, found = run(env, {"KMP_DUPLICATE_LIB_OK": "True"}, python=False)
    assert found["kmp-duplicate-lib-ok"].severity == "warning"
    assert found["kmp-duplicate-lib-ok"].evidence["duplicate_predicted"] is False
    for value in (None, "FALSE", "0"):
        _, found = run(env, {} if value is None else {"KMP_DUPLICATE_LIB_OK": value}, python=False)
        assert "kmp-duplicate-lib-ok" not in found


# -- FDN203 -----------------------------------------------------------------------------------------------

@pytest.fixture
def gomp_torch_with_mkl(tmp_path):
    env = EnvBuilder(tmp_path / "e", real_python=False)
    cpukit.torch_cpu_gomp(env)
    cpukit.add_mkl_wheel(env)
    return env


def test_mkl_threading_layer_conflict(gomp_torch_with_mkl):
    env = gomp_torch_with_mkl
    _, found = run(env, python=False)
    sym = found["mkl-threading-layer-conflict"]
    assert sym.severity == "warning" and sym.evidence["layer"] == "INTEL" and sym.evidence["variable"] is None
    env.add_dist("mkl-service", "2.4.2", [])
    _, found = run(env, python=False)
    assert found["mkl-threading-layer-conflict"].severity == "error"
    _, found = run(env, {"MKL_THREADING_LAYER": "intel"}, python=False)
    assert found["mkl-threading-layer-conflict"].evidence["variable"] == "intel"
    _, found = run(env, {"MKL_SERVICE_FORCE_INTEL": "1"}, python=False)
    assert found["mkl-threading-layer-conflict"].severity == "warning"
    for layer in ("GNU", "sequential"):
        _, found = run(env, {"MKL_THREADING_LAYER": layer}, python=False)
        assert "mkl-threading-layer-conflict" not in found


def test_no_threading_conflict_without_gnu_openmp(tmp_path):
    env = EnvBuilder(tmp_path / "e", real_python=False)
    cpukit.add_mkl_wheel(env)
    env.add_dist("mkl-service", "2.4.2", [])
    _, found = run(env, python=False)
    assert "mkl-threading-layer-conflict" not in found


# -- FDN204 -----------------------------------------------------------------------------------------------

def test_mkl_incomplete_and_complete(tmp_path):
    env = EnvBuilder(tmp_path / "e", real_python=False)
    cpukit.add_mkl_wheel(env, skip=("def", "avx2", "avx512"))
    _, found = run(env, python=False)
    sym = found["mkl-incomplete"]
    assert sym.evidence["library"].endswith("libmkl_rt.so.2") and sym.evidence["owner"] == "pip:mkl 2024.2.0"
    assert "Cannot load libmkl_avx2.so or libmkl_def.so" in sym.summary
    # a dispatch library of another MKL major does not help
    cpukit.build_so(cpukit.prefix_lib(env) / "libmkl_avx2.so.1", "libmkl_avx2.so.1")
    _, found = run(env, python=False)
    assert "mkl-incomplete" in found
    cpukit.build_so(cpukit.prefix_lib(env) / "libmkl_def.so.2", "libmkl_def.so.2")
    _, found = run(env, python=False)
    assert "mkl-incomplete" not in found


def test_mkl_dispatch_reachable_through_ld_library_path(tmp_path):
    env = EnvBuilder(tmp_path / "e", real_python=False)
    cpukit.add_mkl_wheel(env, skip=("def", "avx2", "avx512"))
    other = tmp_path / "other mkl"
    cpukit.build_so(other / "libmkl_avx2.so.2", "libmkl_avx2.so.2")
    _, found = run(env, {"LD_LIBRARY_PATH": str(other)}, python=False)
    assert "mkl-incomplete" not in found


# -- FDN205 -----------------------------------------------------------------------------------------------

def _conda_torch(tmp_path, mkl_version, *, channel="pytorch", exports=False):
    env = EnvBuilder(tmp_path / "conda", real_python=False, conda=True)
    lib = env.prefix / "lib"
    for part in ("rt", "core", "intel_thread", "def", "avx2"):
        funcs = {f"mkl_{part}_stub": 1}
        if exports and part in ("rt", "core"):
            funcs["iJIT_NotifyEvent"] = 0
        cpukit.build_so(lib / f"libmkl_{part}.so.2", f"libmkl_{part}.so.2", functions=funcs)
    cpukit.omp_runtime(lib / "libiomp5.so")
    cpukit.conda_record(env.prefix, "mkl", mkl_version, "h6d00ec8_46344", "main",
                        [f"lib/libmkl_{p}.so.2" for p in ("rt", "core", "intel_thread", "def", "avx2")])
    cpukit.conda_record(env.prefix, "intel-openmp", mkl_version, "h06a4308_46344", "main", ["lib/libiomp5.so"])
    cpukit.consumer(env.site / "torch/lib/libtorch_cpu.so", "libtorch_cpu.so", ["libmkl_rt.so.2", "libiomp5.so"],
                    rpath="$ORIGIN/../../../..")
    cpukit.conda_record(env.prefix, "pytorch", "2.2.2", "py3.11_cpu_0", channel,
                        ["lib/python3.11/site-packages/torch/lib/libtorch_cpu.so"])
    return env


def test_mkl_ijit_symbol_shown(tmp_path):
    env = _conda_torch(tmp_path, "2024.1.0")
    facts, found = run(env, python=False)
    sym = found["mkl-ijit-symbol"]
    assert sym.severity == "error" and sym.evidence["mkl_version"] == "2024.1.0" and sym.evidence["exported"] is False
    assert "undefined symbol: iJIT_NotifyEvent" in sym.summary
    rt = next(lib for lib in facts.cpu.libraries if lib.name == "libmkl_rt")
    assert rt.owner == "conda:mkl 2024.1.0" and rt.sha256 == cpukit.sha256_file(env.prefix / "lib/libmkl_rt.so.2")


@pytest.mark.parametrize("mkl, channel, exports", [("2024.0.0", "pytorch", True), ("2024.1.0", "conda-forge", False),
                                                   ("2024.2.0", "pytorch", True)])
def test_mkl_ijit_symbol_healthy(tmp_path, mkl, channel, exports):
    env = _conda_torch(tmp_path, mkl, channel=channel, exports=exports)
    _, found = run(env, python=False)
    assert "mkl-ijit-symbol" not in found


# -- FDN206 -----------------------------------------------------------------------------------------------

def test_onednn_opts_only_with_tensorflow(tmp_path):
    env = EnvBuilder(tmp_path / "e", real_python=False)
    _, found = run(env, python=False)
    assert "onednn-opts" not in found
    env.add_tensorflow(cuda=None)
    _, found = run(env, python=False)
    sym = found["onednn-opts"]
    assert sym.severity == "info" and sym.evidence["default_on"] is True and "on by default" in sym.summary
    _, found = run(env, {"TF_ENABLE_ONEDNN_OPTS": "0"}, python=False)
    assert found["onednn-opts"].evidence["value"] == "0" and "off" in found["onednn-opts"].summary
    _, found = run(env, {"TF_ENABLE_ONEDNN_OPTS": "maybe\n"}, python=False)
    assert "keeps its default" in found["onednn-opts"].summary


# -- FDN207 -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, value, problem", [
    ("OMP_NUM_THREADS", "four", "not a whole number"),
    ("OMP_NUM_THREADS", "0", "must be at least 1"),
    ("OMP_NUM_THREADS", "-2", "not a whole number"),
    ("OMP_NUM_THREADS", "4\n; rm -rf /", "not a whole number"),
    ("OMP_NUM_THREADS", "9" * 5000, "too large"),
    ("OMP_NUM_THREADS", "٣", "not a whole number"),  # a unicode digit the C runtimes do not read
    ("OMP_NUM_THREADS", "2,0", "must be at least 1"),
    ("MKL_NUM_THREADS", "", "not a whole number"),
    ("TF_NUM_INTRAOP_THREADS", "-1", "not a whole number"),
    ("KMP_AFFINITY", "granularity=fine,compactt", "unknown word"),
    ("KMP_AFFINITY", "granularity=atom,compact", "unknown granularity"),
    ("KMP_AFFINITY", "compact,scatter", "more than one affinity type"),
])
def test_thread_env_invalid(tmp_path, name, value, problem):
    env = EnvBuilder(tmp_path / "e", real_python=False)
    _, found = run(env, {name: value}, python=False)
    sym = found["thread-env-invalid"]
    assert sym.evidence["variable"] == name and problem in sym.evidence["problem"]
    assert len(sym.summary) < 300 and "\n" not in sym.summary.replace("\\n", "")


def test_thread_env_oversubscribed_and_healthy(tmp_path):
    env = EnvBuilder(tmp_path / "e", real_python=False)
    facts, found = run(env, {"OMP_NUM_THREADS": "100000"}, python=False)
    cpus = facts.cpu.cpu_count
    assert found["thread-env-invalid"].evidence == {"variable": "OMP_NUM_THREADS", "value": "100000",
                                                    "problem": "oversubscribes", "threads": 100000, "cpu_count": cpus}
    healthy = {"OMP_NUM_THREADS": f"{cpus},1", "MKL_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "0",
               "TF_NUM_INTEROP_THREADS": str(cpus), "KMP_AFFINITY": "granularity=fine,compact,1,0"}
    _, found = run(env, healthy, python=False)
    assert "thread-env-invalid" not in found
    _, found = run(env, {"KMP_AFFINITY": "verbose,proclist=[0,1,2],explicit"}, python=False)
    assert "thread-env-invalid" not in found


def test_cpu_count_comes_from_sys_under_a_root(tmp_path):
    root = tmp_path / "root"
    (root / "sys/devices/system/cpu").mkdir(parents=True)
    (root / "sys/devices/system/cpu/online").write_text("0-3,8-11\n")
    from fixdnn.facts.cpu import cpu_count

    assert cpu_count(Host(root=root, environ={})) == (8, "/sys/devices/system/cpu/online")
    facts, _ = run(EnvBuilder(tmp_path / "e", real_python=False), python=False)
    shrunk = replace(facts, cpu=replace(facts.cpu, cpu_count=2), env={"MKL_NUM_THREADS": "3"})
    found = {s.name: s for s in diagnose(shrunk, fixdnn.knowledge.compat.load())}
    assert found["thread-env-invalid"].evidence["threads"] == 3
    assert json.loads(dumps(shrunk))["cpu"]["cpu_count"] == 2
