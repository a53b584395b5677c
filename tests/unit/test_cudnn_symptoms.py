"""Each cuDNN / CUDA / framework symptom: a case that shows it and a healthy case that does not.

Environments are real venvs with gcc-built libraries laid out like the real wheels (tests/envkit).
"""

from __future__ import annotations

import os
import shutil

from tests.conftest import names, run_diagnosis
from tests.envkit.cuda import libcuda
from tests.envkit.elfkit import build_so
from tests.envkit.env import EnvBuilder, stray_cudnn


def by_name(symptoms, name):
    found = [s for s in symptoms if s.name == name]
    assert found, f"{name} not found in {[s.name for s in symptoms]}"
    return found[0]


def test_healthy_torch_has_no_error_or_warning(torch_env, environ):
    facts, symptoms = run_diagnosis(torch_env.python, environ)
    assert names(symptoms, "error") == [] and names(symptoms, "warning") == []
    torch = next(fw for fw in facts.frameworks if fw.name == "torch")
    assert torch.gpu_build and torch.cuda == "13.0"
    cudnn = next(n for n in torch.needs if n.library == "cudnn")
    assert (cudnn.major, cudnn.minimum, cudnn.pin) == (9, "9.24", "nvidia-cudnn-cu13==9.24.0.43")
    load = next(o for o in facts.loads_of("torch") if o.library == "cudnn")
    assert load.path == str(torch_env.cudnn_lib / "libcudnn.so.9")
    copy = facts.copy_at(load.path)
    assert copy.version == "9.24.0" and copy.owner == "pip:nvidia-cudnn-cu13 9.24.0.43"
    assert copy.soname == "libcudnn.so.9"


def test_healthy_tensorflow_has_no_error_or_warning(tf_env, environ):
    facts, symptoms = run_diagnosis(tf_env.python, environ)
    assert names(symptoms, "error") == [] and names(symptoms, "warning") == []
    tf = next(fw for fw in facts.frameworks if fw.name == "tensorflow")
    need = next(n for n in tf.needs if n.library == "cudnn")
    assert (need.major, need.minimum, need.wheel) == (9, "9.3", "nvidia-cudnn-cu12")
    assert tf.load_kind == "dlopen" and tf.loaded_by.endswith("libtensorflow_framework.so.2")


def test_cudnn_missing(torch_env, environ):
    shutil.rmtree(torch_env.cudnn_lib.parent)
    shutil.rmtree(next(torch_env.site.glob("nvidia_cudnn_cu13-*.dist-info")))
    _, symptoms = run_diagnosis(torch_env.python, environ)
    s = by_name(symptoms, "cudnn-missing")
    assert s.code == "FDN101" and s.severity == "error"
    assert s.evidence["soname"] == "libcudnn.so.9" and s.evidence["needs"]["pin"] == "nvidia-cudnn-cu13==9.24.0.43"
    assert any("DT_RPATH" in line for line in s.chain)
    assert "cudnn-not-on-search-path" not in names(symptoms)


def test_cudnn_missing_when_the_copy_is_a_truncated_file(torch_env, environ):
    shim = torch_env.cudnn_lib / "libcudnn.so.9"
    data = shim.read_bytes()
    shim.write_bytes(data[:100])
    _, symptoms = run_diagnosis(torch_env.python, environ)
    s = by_name(symptoms, "cudnn-missing")
    assert s.evidence["broken_copy"]["path"] == str(shim)


def test_cudnn_version_mismatch_from_ld_library_path(tf_env, environ, tmp_path):
    """TF dlopen()s by SONAME with a DT_RUNPATH, so LD_LIBRARY_PATH wins: an old 9.1 there is loaded."""
    old = stray_cudnn(tmp_path / "old cudnn", "9.1.0")
    environ["LD_LIBRARY_PATH"] = str(old)
    facts, symptoms = run_diagnosis(tf_env.python, environ)
    s = by_name(symptoms, "cudnn-version-mismatch")
    assert s.evidence["loaded"]["version"] == "9.1.0"
    assert s.evidence["loaded"]["path"].startswith(str(old))
    assert any("LD_LIBRARY_PATH" in line for line in s.chain)
    # the wheel's usable copy is named as the way out
    assert any(c["path"].startswith(str(tf_env.cudnn_lib)) for c in s.evidence["usable_copies"])
    assert "cudnn-shadowed" in names(symptoms)


def test_torch_rpath_beats_ld_library_path(torch_env, environ, tmp_path):
    """torch's DT_RPATH is searched before LD_LIBRARY_PATH: the old copy is not loaded."""
    environ["LD_LIBRARY_PATH"] = str(stray_cudnn(tmp_path / "old", "9.13.0"))
    facts, symptoms = run_diagnosis(torch_env.python, environ)
    assert "cudnn-version-mismatch" not in names(symptoms) and "cudnn-shadowed" not in names(symptoms)


def test_cudnn_shadowed_by_pythonpath_preload(torch_env, environ, tmp_path):
    """torch preloads nvidia/cudnn/lib from the first sys.path entry that has it."""
    other = EnvBuilder(tmp_path / "other", real_python=False)
    other.add_cudnn_wheel("9.13.0.50", 13, dist=False)
    environ["PYTHONPATH"] = str(other.site)
    facts, symptoms = run_diagnosis(torch_env.python, environ)
    s = by_name(symptoms, "cudnn-shadowed")
    assert s.severity == "warning"
    assert s.evidence["loaded"]["path"].startswith(str(other.site))
    assert s.evidence["expected"]["path"].startswith(str(torch_env.site))
    assert "pythonpath" in s.evidence["via"]
    assert by_name(symptoms, "cudnn-version-mismatch").evidence["loaded"]["version"] == "9.13.0"


def test_cudnn_shadowed_by_current_directory(torch_env, environ, tmp_path, monkeypatch):
    workdir = tmp_path / "project"
    stray = EnvBuilder(workdir, real_python=False)
    stray.add_cudnn_wheel("9.26.0.51", 13, location=workdir, dist=False)
    monkeypatch.chdir(workdir)
    facts, symptoms = run_diagnosis(torch_env.python, environ)
    s = by_name(symptoms, "cudnn-shadowed")
    assert "cwd" in s.evidence["via"]
    assert "cudnn-version-mismatch" not in names(symptoms)  # 9.26 >= 9.24: only shadowed


def test_cudnn_pin_mismatch(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    env.add_torch()
    env.add_cudnn_wheel("9.26.0.51", 13)
    env.add_cuda_wheels(13)
    _, symptoms = run_diagnosis(env.python, environ)
    s = by_name(symptoms, "cudnn-pin-mismatch")
    assert (s.evidence["pinned"], s.evidence["installed"]) == ("9.24.0.43", "9.26.0.51")
    assert names(symptoms, "error") == []


def test_cudnn_incomplete_missing_sublibrary(torch_env, environ):
    (torch_env.cudnn_lib / "libcudnn_cnn.so.9").unlink()
    _, symptoms = run_diagnosis(torch_env.python, environ)
    s = by_name(symptoms, "cudnn-incomplete")
    assert s.evidence["missing"] == ["libcudnn_cnn.so.9"]


def test_cudnn_incomplete_names_a_truncated_sublibrary_damaged_not_missing(torch_env, environ):
    lib = torch_env.cudnn_lib / "libcudnn_cnn.so.9"
    lib.write_bytes(lib.read_bytes()[:40])  # a full disk: the file is there, cut short
    _, symptoms = run_diagnosis(torch_env.python, environ)
    s = by_name(symptoms, "cudnn-incomplete")
    assert s.evidence["missing"] == []
    assert s.evidence["damaged"] == {"libcudnn_cnn.so.9": f"{lib}: file too short"}
    assert "damaged" in s.summary and "missing" not in s.summary


def test_cudnn_incomplete_mixed_versions(tf_env, environ, tmp_path):
    """Only the shim copied over a tarball install: sub-libraries of another release."""
    lib = stray_cudnn(tmp_path / "cuda", "9.3.0")
    for f in lib.glob("libcudnn.so*"):
        f.unlink()
    build_so(lib / "libcudnn.so.9.5.0", "libcudnn.so.9", rpath="$ORIGIN", functions={"cudnnGetVersion": 90500})
    (lib / "libcudnn.so.9").symlink_to("libcudnn.so.9.5.0")
    shutil.rmtree(tf_env.cudnn_lib.parent)
    environ["LD_LIBRARY_PATH"] = str(lib)
    _, symptoms = run_diagnosis(tf_env.python, environ)
    s = by_name(symptoms, "cudnn-incomplete")
    assert set(s.evidence["versions"]) == {"9.3.0", "9.5.0"}


def test_cudnn_not_on_search_path(tf_env, environ, tmp_path):
    shutil.rmtree(tf_env.cudnn_lib.parent)
    root = tmp_path / "tarball"
    stray_cudnn(root, "9.5.0")
    environ["CUDNN_PATH"] = str(root)
    _, symptoms = run_diagnosis(tf_env.python, environ)
    s = by_name(symptoms, "cudnn-not-on-search-path")
    assert s.evidence["directory"] == str(root / "lib")
    assert "cudnn-missing" not in names(symptoms)


def test_cudnn_wheel_collision(torch_env, environ):
    torch_env.add_dist("nvidia-cudnn-cu12", "9.3.0.75", [])
    _, symptoms = run_diagnosis(torch_env.python, environ)
    s = by_name(symptoms, "cudnn-wheel-collision")
    assert {d["name"] for d in s.evidence["distributions"]} == {"nvidia-cudnn-cu12", "nvidia-cudnn-cu13"}


def test_cuda_runtime_missing(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    env.add_tensorflow()
    env.add_cudnn_wheel("9.3.0.75", 12)
    env.add_cuda_wheels(12, "12.5.82", skip=("cudart",))
    _, symptoms = run_diagnosis(env.python, environ)
    s = by_name(symptoms, "cuda-runtime-missing")
    assert s.evidence["soname"] == "libcudart.so.12" and s.evidence["wheel"] == "nvidia-cuda-runtime-cu12"


def test_cuda_runtime_mismatch_hand_symlinked(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    env.add_tensorflow()
    env.add_cudnn_wheel("9.3.0.75", 12)
    env.add_cuda_wheels(12, "12.5.82", skip=("cudart",))
    bad = tmp_path / "hand made"
    build_so(bad / "libcudart.so.11.8.89", "libcudart.so.11")
    (bad / "libcudart.so.12").symlink_to("libcudart.so.11.8.89")
    environ["LD_LIBRARY_PATH"] = str(bad)
    _, symptoms = run_diagnosis(env.python, environ)
    s = by_name(symptoms, "cuda-runtime-mismatch")
    assert s.severity == "error" and s.evidence["loaded"]["version"] == "11.8.89"
    assert "cuda-runtime-missing" not in names(symptoms)


def test_cpu_torch_needs_no_cudnn(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    env.add_torch("2.13.0+cpu", cuda=None)
    facts, symptoms = run_diagnosis(env.python, environ)
    assert symptoms == ()
    torch = facts.frameworks[0]
    assert not torch.gpu_build and torch.needs == ()


def test_driver_missing_is_info_for_gpu_builds_only(torch_env, environ, tmp_path):
    _, symptoms = run_diagnosis(torch_env.python, environ)
    assert by_name(symptoms, "driver-missing").severity == "info"
    cpu = EnvBuilder(tmp_path / "cpu")
    cpu.add_torch("2.13.0+cpu", cuda=None)
    _, symptoms = run_diagnosis(cpu.python, environ)
    assert "driver-missing" not in names(symptoms)


def _root_with_driver(tmp_path, version_line: str):
    root = tmp_path / "root"
    env = EnvBuilder(root / "opt/env", real_python=False)
    env.torch_cuda13()
    proc = root / "proc/driver/nvidia"
    proc.mkdir(parents=True)
    (proc / "version").write_text(version_line)
    return root


def test_driver_too_old_read_from_proc_under_root(tmp_path, environ):
    root = _root_with_driver(tmp_path, "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 2023\n")
    facts, symptoms = run_diagnosis(None, environ, prefix="/opt/env", root=root)
    assert facts.driver.version == "535.104.05"
    s = by_name(symptoms, "driver-too-old")
    assert s.evidence["minimum"] == "580.65.06" and s.evidence["cuda"] == "13.0"


def test_driver_new_enough_under_root(tmp_path, environ):
    root = _root_with_driver(tmp_path, "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.95.05  Release Build\n")
    libcuda(root / "usr/lib64", "580.95.05")  # the driver's user-space half (else: libcuda-missing)
    facts, symptoms = run_diagnosis(None, environ, prefix="/opt/env", root=root)
    assert facts.driver.version == "580.95.05"
    assert "driver-too-old" not in names(symptoms) and "driver-missing" not in names(symptoms)
    assert names(symptoms, "error") == []


def test_framework_pins_conflict(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    env.torch_cuda13()
    env.add_tensorflow("2.19.0", requires=['nvidia-cudnn-cu12==9.3.0.75; extra == "and-cuda"'])
    _, symptoms = run_diagnosis(env.python, environ)
    s = by_name(symptoms, "framework-pins-conflict")
    assert "nvidia-cudnn-cu13==9.24.0.43" in s.summary and "nvidia-cudnn-cu12==9.3.0.75" in s.summary


def test_frameworks_that_agree_do_not_conflict(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    env.tensorflow_cuda12()
    env.add_jax_plugin("0.7.2", 12)
    facts, symptoms = run_diagnosis(env.python, environ)
    assert "framework-pins-conflict" not in names(symptoms)
    jax = next(fw for fw in facts.frameworks if fw.name == "jax")
    assert next(n for n in jax.needs if n.library == "cudnn").minimum == "9.8"
    # the JAX plugin loads nvidia.cudnn.__path__[0]/lib/libcudnn.so.9 by full path
    load = next(o for o in facts.loads_of("jax") if o.library == "cudnn")
    assert load.path == str(env.cudnn_lib / "libcudnn.so.9") and load.preload


def test_torch_preload_takes_the_first_entry_whatever_its_major(torch_env, environ, tmp_path):
    """torch globs libcudnn.so.*[0-9]: a cuDNN 8 wheel earlier on sys.path is preloaded (and stops the
    search), but its SONAME does not answer libcudnn.so.9, which the loader then finds through the RPATH."""
    old = EnvBuilder(tmp_path / "old", real_python=False)
    old.add_cudnn_wheel("8.9.7.29", 12, dist=False)
    environ["PYTHONPATH"] = str(old.site)
    facts, symptoms = run_diagnosis(torch_env.python, environ)
    load = next(o for o in facts.loads_of("torch") if o.library == "cudnn")
    assert os.path.realpath(load.path) == str(torch_env.cudnn_lib / "libcudnn.so.9")  # via the DT_RPATH
    assert facts.copy_at(load.path).version == "9.24.0"  # the loader's $ORIGIN/../.. name is known too
    assert "SONAME libcudnn.so.8, not libcudnn.so.9" in load.preload[0]
    assert "cudnn-shadowed" not in names(symptoms) and names(symptoms, "error") == []


def test_torch_preload_also_reads_a_plain_cudnn_lib_folder_in_the_current_directory(torch_env, environ, tmp_path,
                                                                                     monkeypatch):
    """torch also globs <sys.path entry>/cudnn/lib: a tarball unpacked as ./cudnn shadows the wheel."""
    project = tmp_path / "project"
    stray_cudnn(project / "cudnn", "9.13.0")
    monkeypatch.chdir(project)
    _, symptoms = run_diagnosis(torch_env.python, environ)
    s = by_name(symptoms, "cudnn-shadowed")
    assert s.evidence["loaded"]["path"].startswith(str(project / "cudnn" / "lib"))
    assert by_name(symptoms, "cudnn-version-mismatch").evidence["loaded"]["version"] == "9.13.0"


def test_version_mismatch_of_the_wheel_found_through_tensorflows_runpath(tmp_path, environ):
    """The classic "Loaded runtime CuDNN library: 9.1.0 but source was compiled with: 9.3.0": the old
    wheel sits where TF's DT_RUNPATH ($ORIGIN/../nvidia/cudnn/lib) points."""
    env = EnvBuilder(tmp_path / "venv")
    env.add_tensorflow()
    env.add_cudnn_wheel("9.1.0.70", 12)
    env.add_cuda_wheels(12, "12.5.82")
    facts, symptoms = run_diagnosis(env.python, environ)
    s = by_name(symptoms, "cudnn-version-mismatch")
    assert s.evidence["loaded"]["version"] == "9.1.0" and s.evidence["needs"]["minimum"] == "9.3"
    assert any("DT_RUNPATH" in line for line in s.chain)
