"""A CUDA library that would load, linked against a newer release of its provider than the one installed:
the report names the binding, the symbol and the loader's own message, as glibc prints it."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.envkit.cli import run_fixdnn
from tests.envkit.env import EnvBuilder
from tests.envkit.symver import provider, requester

SONAME = "libnvJitLink.so.13"
NEW = {SONAME: ["nvJitLinkCreate", "__nvJitLinkGetErrorLogSize_13_1"]}
OLD = {SONAME: ["nvJitLinkCreate"]}


def torch_with_nvjitlink(tmp_path, provider_versions) -> EnvBuilder:
    """torch 2.14.1+cu130 whose cuBLAS needs nvJitLink (as the real one does), with the given nvJitLink."""
    env = EnvBuilder(tmp_path / "venv").torch_cuda13()
    lib = env.site / "nvidia/cu13/lib"
    built = provider(tmp_path / "build" / SONAME, SONAME, NEW)
    requester(lib / "libcublas.so.13", "libcublas.so.13", NEW[SONAME], built)
    provider(lib / SONAME, SONAME, provider_versions)
    runtime = sorted(f"nvidia/cu13/lib/{p.name}" for p in lib.iterdir() if p.name != SONAME)
    env.add_dist("nvidia-cuda-runtime", "13.0.96", runtime)
    env.add_dist("nvidia-nvjitlink", "13.0.39", [f"nvidia/cu13/lib/{SONAME}"])
    return env


def diagnose(env, environ):
    proc = run_fixdnn(["--python", str(env.python), "--json"], environ)
    assert proc.stderr == "" or "Traceback" not in proc.stderr, proc.stderr
    return proc, json.loads(proc.stdout)


def glibc_says(path) -> str:
    proc = subprocess.run([sys.executable, "-c", "import ctypes, sys\ntry:\n    ctypes.CDLL(sys.argv[1])\n"
                           "except OSError as e:\n    print(e)\n", str(path)], capture_output=True, text=True, env={})
    return proc.stdout.strip()


def test_an_older_provider_is_named_with_the_loaders_message(tmp_path, environ):
    env = torch_with_nvjitlink(tmp_path, OLD)
    proc, report = diagnose(env, environ)
    assert proc.returncode == 1, proc.stderr
    found = [s for s in report["symptoms"] if s["name"] == "library-symbol-missing"]
    assert len(found) == 1, report["symptoms"]
    ev = found[0]["evidence"]
    cublas = env.site / "nvidia/cu13/lib/libcublas.so.13"
    assert ev["requester"] == str(cublas) and ev["soname"] == SONAME
    assert ev["missing_symbols"] == [f"__nvJitLinkGetErrorLogSize_13_1@{SONAME}"]
    assert ev["provider_owner"] == "nvidia-nvjitlink 13.0.39" and ev["requester_owner"] == "nvidia-cuda-runtime 13.0.96"
    assert ev["frameworks"] == ["torch"]
    assert ev["loader_message"] == glibc_says(cublas)  # the real loader, the same words


def test_the_matching_provider_stays_silent(tmp_path, environ):
    env = torch_with_nvjitlink(tmp_path, NEW)
    proc, report = diagnose(env, environ)
    assert glibc_says(env.site / "nvidia/cu13/lib/libcublas.so.13") == ""
    assert [s["name"] for s in report["symptoms"] if s["severity"] in ("error", "warning")] == []
    assert proc.returncode == 0, report["symptoms"]
