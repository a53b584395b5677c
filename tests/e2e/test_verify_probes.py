"""fixdnn verify: probes in subprocesses of a real venv whose gcc-built cuDNN behaves like the real one
(a shim that aborts when its graph sub-library is missing, cudnnCreate -> 1001 without a driver)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from fixdnn.facts import gather
from fixdnn.probes.runner import findings_of, run_probe
from fixdnn.probes.suite import trim_trace, verify
from fixdnn.target.host import Host
from fixdnn.target.interpreter import TargetSpec
from tests.envkit import stubs
from tests.envkit.cli import run_fixdnn
from tests.envkit.env import EnvBuilder, stray_cudnn
from tests.envkit.machine import hermetic_environ

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build real ELF objects")


def _environ(tmp_path, **extra):
    return hermetic_environ(tmp_path, PATH="/usr/bin:/bin", **extra)


def _verify(env, tmp_path, **kw):
    host = Host(environ=_environ(tmp_path, **kw.pop("extra", {})))
    facts = gather(host, TargetSpec(python=str(env.python)))
    return verify(facts, host, **kw)


def _names(result, severity=None):
    return sorted({f.name for f in result.findings if severity is None or f.severity == severity})


@pytest.fixture
def env(tmp_path):
    return stubs.torch_env(EnvBuilder(tmp_path / "venv 'q' $x ü"))


def test_healthy_environment_passes_and_no_gpu_is_not_a_broken_cudnn(env, tmp_path):
    result = _verify(env, tmp_path)
    assert result.exit_code == 0, [f.summary for f in result.findings]
    assert _names(result, "error") == []
    text = "\n".join(result.passed)
    assert "cudnnGetVersion() = 92400 (9.24.0)" in text
    assert "cudnnGetCudartVersion() = 13030" in text and "cudnnGetProperty() = 9.24.0" in text
    assert "7 sub-libraries loaded by path" in text
    assert "torch: conv2d on the CPU works" in text and "torch: cuDNN version query works (92400)" in text
    no_gpu = next(f for f in result.findings if f.name == "cudnn-no-gpu")
    assert no_gpu.severity == "info" and no_gpu.evidence["status"] == 1001
    assert no_gpu.evidence["name"] == "CUDNN_STATUS_NOT_INITIALIZED" and no_gpu.evidence["driver"] is False


def test_with_a_driver_and_a_gpu_cudnn_create_succeeds(env, tmp_path):
    drv = tmp_path / "driver"
    stubs.libcuda(drv / "libcuda.so.1", gpus=1)
    result = _verify(env, tmp_path, extra={"LD_LIBRARY_PATH": str(drv)}, frameworks=())
    assert any("cudnnCreate() = 0 CUDNN_STATUS_SUCCESS" in p for p in result.passed)
    assert "cudnn-no-gpu" not in _names(result)


def test_missing_graph_sublibrary_aborts_the_probe_not_fixdnn(env, tmp_path):
    (env.cudnn_lib / "libcudnn_graph.so.9").unlink()
    result = _verify(env, tmp_path, loader_trace=True)
    assert result.exit_code == 1
    aborted = [f for f in result.findings if f.name == "probe-aborted"]
    assert {f.probe.split()[0] for f in aborted} == {"cuDNN", "torch"}
    cudnn = next(f for f in aborted if f.probe.startswith("cuDNN"))
    assert cudnn.evidence["signal"] == "SIGABRT" and cudnn.evidence["last_step"] == "cudnnGetVersion"
    assert "Invalid handle. Cannot load symbol cudnnGetVersion" in cudnn.output
    trace = result.traces["libcudnn_graph.so.9"]
    assert trace.startswith("find library=libcudnn_graph.so.9")
    assert f"trying file={env.cudnn_lib}/libcudnn_graph.so.9" in trace
    assert "glibc-hwcaps" not in trace.replace("glibc-hwcaps/tls/platform subdirectories", "")


def test_missing_ops_sublibrary_shows_only_when_loading_cnn(env, tmp_path):
    (env.cudnn_lib / "libcudnn_ops.so.9").unlink()
    result = _verify(env, tmp_path, frameworks=())
    failed = {os.path.basename(f.evidence["path"]): f for f in result.findings if f.name == "cudnn-sublibrary-load-failed"}
    assert set(failed) == {"libcudnn_cnn.so.9", "libcudnn_adv.so.9"}
    assert "libcudnn_ops.so.9: cannot open shared object file" in failed["libcudnn_cnn.so.9"].summary
    assert any("cudnnGetVersion() = 92400" in p for p in result.passed)  # the shim itself still answers


def test_shim_and_graph_from_different_versions(tmp_path):
    env = stubs.torch_env(EnvBuilder(tmp_path / "venv"), graph_version="9.13.0")
    result = _verify(env, tmp_path, frameworks=())
    differs = next(f for f in result.findings if f.name == "cudnn-version-differs")
    assert differs.severity == "error" and differs.evidence["runtime_version"] == 91300
    assert differs.evidence["static_version"].startswith("9.24")


def test_what_really_loaded_differs_from_the_model(env, tmp_path):
    stray = stray_cudnn(tmp_path / "stray", "9.13.0")
    (env.site / "preload_other_cudnn.pth").write_text(f"import ctypes; ctypes.CDLL({str(stray / 'libcudnn.so.9')!r})\n")
    result = _verify(env, tmp_path)
    diff = next(f for f in result.findings if f.name == "load-differs-from-model" and f.probe == "torch")
    assert diff.evidence["soname"] == "libcudnn.so.9"
    assert diff.evidence["predicted"] == str(env.cudnn_lib / "libcudnn.so.9")
    assert diff.evidence["loaded"] == [str(stray / "libcudnn.so.9.13.0")]
    assert diff.severity == "error" and result.exit_code == 1


def test_framework_import_failure_is_a_finding(env, tmp_path):
    (env.cudnn_lib / "libcudnn.so.9").unlink()
    result = _verify(env, tmp_path)
    failed = next(f for f in result.findings if f.name == "framework-import-failed")
    assert "libcudnn.so.9: cannot open shared object file" in failed.summary


def test_a_hung_probe_is_killed_and_reported(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho '{\"step\": \"load\", \"path\": \"/x\"}'\nsleep 60 & sleep 60\n")
    fake.chmod(0o755)
    run = run_probe("cudnn", str(fake), ["{}"], probe="cuDNN /x", env=_environ(tmp_path), timeout=1)
    (finding,) = findings_of(run)
    assert run.timed_out and finding.name == "probe-timeout" and "during load of /x" in finding.summary


def test_a_crash_with_exit_134_from_a_wrapper_counts_as_sigabrt(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'Invalid handle. Cannot load symbol cudnnGetVersion' >&2\nexit 134\n")
    fake.chmod(0o755)
    run = run_probe("cudnn", str(fake), ["{}"], probe="cuDNN /x", env=_environ(tmp_path), timeout=30)
    (finding,) = findings_of(run)
    assert finding.name == "probe-aborted" and finding.evidence["signal"] == "SIGABRT"


def test_trim_trace_keeps_the_search_and_drops_pids():
    log = ("     42:\tfind library=libfoo.so.1 [0]; searching\n"
           "     42:\t search path=/a/glibc-hwcaps/x86-64-v3:/a:/lib/x86_64-linux-gnu\t\t(LD_LIBRARY_PATH)\n"
           "     42:\t  trying file=/a/glibc-hwcaps/x86-64-v3/libfoo.so.1\n"
           "     42:\t  trying file=/a/libfoo.so.1\n"
           "     42:\t  trying file=/lib/x86_64-linux-gnu/libfoo.so.1\n     42:\t\n"
           "     42:\tfind library=libbar.so.2 [0]; searching\n")
    out = trim_trace(log, ["libfoo.so.1"])
    assert out["libfoo.so.1"].splitlines() == [
        "find library=libfoo.so.1 [0]; searching",
        " search path=/a:/lib/x86_64-linux-gnu  (LD_LIBRARY_PATH)",
        "  trying file=/a/libfoo.so.1",
        "  trying file=/lib/x86_64-linux-gnu/libfoo.so.1",
        " (1 glibc-hwcaps/tls/platform subdirectories of these directories also tried; not shown)",
    ]


def test_cli_verify_exit_codes_and_json(env, tmp_path):
    environ = _environ(tmp_path)
    ok = run_fixdnn(["--python", str(env.python), "verify"], environ, timeout=300, how="script")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ok    torch: conv2d on the CPU works" in ok.stdout and "info  cudnn-no-gpu" in ok.stdout
    (env.cudnn_lib / "libcudnn_graph.so.9").unlink()
    bad = run_fixdnn(["--python", str(env.python), "--json", "verify", "--loader-trace"], environ, timeout=300,
                     how="script")
    assert bad.returncode == 1, bad.stderr
    data = json.loads(bad.stdout)
    assert data["schema"] == "fixdnn.verify/1" and data["ok"] is False
    assert "libcudnn_graph.so.9" in data["loader_traces"]
    refused = run_fixdnn(["--root", str(tmp_path), "verify"], environ, how="script")
    assert refused.returncode == 2 and refused.stderr.startswith("fixdnn: verify runs the target's interpreter")
