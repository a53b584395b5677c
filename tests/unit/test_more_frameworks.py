"""ONNX Runtime and PaddlePaddle: what each needs and how each really loads cuDNN (issue 11 item 4). Real ELF
stubs in real dist-info layouts (tests/envkit/frameworks.py); each broken case has a healthy twin."""

from __future__ import annotations

from tests.conftest import names, run_diagnosis
from tests.envkit.env import EnvBuilder, stray_cudnn
from tests.envkit.frameworks import add_onnxruntime_gpu, add_paddle_gpu
from tests.unit.test_plan import plan_for


def by_name(symptoms, name, framework):
    found = [s for s in symptoms if s.name == name and s.evidence.get("framework") == framework]
    assert found, f"{name} for {framework} not in {[(s.name, s.evidence.get('framework')) for s in symptoms]}"
    return found[0]


def fw(facts, name):
    return next(f for f in facts.frameworks if f.name == name)


def ort_env(tmp_path, **kw):
    env = EnvBuilder(tmp_path / "venv")
    add_onnxruntime_gpu(env, **kw)
    env.add_cuda_wheels(12, "12.8.90")
    return env


def ort_ld_path(env):
    return ":".join(str(env.site / d) for d in ("nvidia/cudnn/lib", "nvidia/cublas/lib", "nvidia/cuda_runtime/lib"))


# -- ONNX Runtime --------------------------------------------------------------------------------------

def test_ort_without_any_cudnn_wheel_is_cudnn_missing(tmp_path, environ):
    """The issue's case: the provider names no cuDNN in DT_NEEDED but dlopen()s libcudnn.so.9; no cuDNN
    wheel is installed, so the CUDA provider cannot load."""
    env = ort_env(tmp_path)
    environ["LD_LIBRARY_PATH"] = ort_ld_path(env)
    facts, symptoms = run_diagnosis(env.python, environ)
    ort = fw(facts, "onnxruntime")
    need = next(n for n in ort.needs if n.library == "cudnn")
    assert (need.major, need.wheel, ort.cuda) == (9, "nvidia-cudnn-cu12", "12.8")
    assert "dlopen" in need.source
    s = by_name(symptoms, "cudnn-missing", "onnxruntime")
    assert s.severity == "error" and s.evidence["soname"] == "libcudnn.so.9"


def test_ort_healthy_twin_with_the_cudnn_wheel_on_its_search_path(tmp_path, environ):
    env = ort_env(tmp_path)
    env.add_cudnn_wheel("9.8.0.87", 12)
    environ["LD_LIBRARY_PATH"] = ort_ld_path(env)
    facts, symptoms = run_diagnosis(env.python, environ)
    load = next(o for o in facts.loads_of("onnxruntime") if o.library == "cudnn")
    assert load.path == str(env.cudnn_lib / "libcudnn.so.9")
    assert names(symptoms, "error") == [] and names(symptoms, "warning") == []


def test_ort_wheel_installed_but_not_on_the_providers_search_path(tmp_path, environ):
    """Without preload_dlls() / LD_LIBRARY_PATH, the provider (no RUNPATH) does not reach nvidia/cudnn/lib."""
    env = ort_env(tmp_path)
    env.add_cudnn_wheel("9.8.0.87", 12)
    environ["LD_LIBRARY_PATH"] = ":".join(str(env.site / d) for d in ("nvidia/cublas/lib", "nvidia/cuda_runtime/lib"))
    _, symptoms, p = plan_for(env.python, environ)
    s = by_name(symptoms, "cudnn-not-on-search-path", "onnxruntime")
    assert s.evidence["directory"] == str(env.cudnn_lib)
    steps = [(a.kind, a.name, a.value) for a in p.actions if "cudnn-not-on-search-path" in a.fixes]
    assert ("path-prepend", "LD_LIBRARY_PATH", str(env.cudnn_lib)) in steps


def test_ort_cudnn_in_dt_needed_is_read_from_the_provider(tmp_path, environ):
    env = ort_env(tmp_path, cudnn_needed=True)
    facts, _ = run_diagnosis(env.python, environ)
    need = next(n for n in fw(facts, "onnxruntime").needs if n.library == "cudnn")
    assert need.source.endswith("DT_NEEDED libcudnn.so.9")


# -- PaddlePaddle --------------------------------------------------------------------------------------

def paddle_env(tmp_path, cudnn="9.5.1.17", **kw):
    env = EnvBuilder(tmp_path / "venv")
    add_paddle_gpu(env, **kw)
    if cudnn:
        env.add_cudnn_wheel(cudnn, 12)
    return env


def test_paddle_healthy_loads_its_wheel_by_full_path(tmp_path, environ):
    env = paddle_env(tmp_path)
    facts, symptoms = run_diagnosis(env.python, environ)
    paddle = fw(facts, "paddle")
    assert paddle.gpu_build and paddle.cuda == "12.6"
    need = next(n for n in paddle.needs if n.library == "cudnn")
    assert (need.major, need.pin) == (9, "nvidia-cudnn-cu12==9.5.1.17")
    load = next(o for o in facts.loads_of("paddle") if o.library == "cudnn")
    assert load.path == str(env.cudnn_lib / "libcudnn.so.9") and "FLAGS_cudnn_dir" in load.preload[0]
    assert [n for n in names(symptoms) if n.startswith("cudnn")] == []


def test_paddle_2x_without_with_gpu_is_still_a_gpu_build(tmp_path, environ):
    """Seen on the real paddlepaddle-gpu 2.6.2 wheel: its generated version file has no ``with_gpu`` line,
    only ``cuda_version = '11.8'`` / ``cudnn_version = '8.6.0'`` (a CPU build writes 'False'). Taking it
    for a CPU build hid that no cuDNN 8 is anywhere."""
    env = EnvBuilder(tmp_path / "venv")
    add_paddle_gpu(env, "2.6.2", cuda="11.8", cudnn="8.6.0", pip_libraries=False, with_gpu_line=False)
    facts, symptoms = run_diagnosis(env.python, environ)
    paddle = fw(facts, "paddle")
    assert paddle.gpu_build and paddle.cuda == "11.8"
    assert next(n for n in paddle.needs if n.library == "cudnn").major == 8
    assert "cudnn-missing" in names(symptoms, "error")


def test_paddle_2x_cpu_build_twin(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    add_paddle_gpu(env, "2.6.2", cuda="False", cudnn="False", pip_libraries=False, with_gpu_line=False)
    facts, symptoms = run_diagnosis(env.python, environ)
    assert not fw(facts, "paddle").gpu_build and names(symptoms, "error") == []


def test_paddle_full_path_load_beats_an_old_ld_library_path(tmp_path, environ):
    env = paddle_env(tmp_path)
    environ["LD_LIBRARY_PATH"] = str(stray_cudnn(tmp_path / "old", "8.9.7"))
    facts, symptoms = run_diagnosis(env.python, environ)
    assert next(o for o in facts.loads_of("paddle") if o.library == "cudnn").path.startswith(str(env.site))
    assert [n for n in names(symptoms) if n.startswith("cudnn")] == []


def test_paddle_without_its_wheel_falls_back_to_dlopen_and_finds_a_wrong_major(tmp_path, environ):
    env = paddle_env(tmp_path, cudnn=None)
    environ["LD_LIBRARY_PATH"] = str(stray_cudnn(tmp_path / "old", "8.9.7"))
    old9 = tmp_path / "old"  # a cuDNN 8 answers libcudnn.so.8 only: libcudnn.so.9 is missing
    facts, symptoms = run_diagnosis(env.python, environ)
    load = next(o for o in facts.loads_of("paddle") if o.library == "cudnn")
    assert load.path is None and "falls back to dlopen" in load.preload[0]
    s = by_name(symptoms, "cudnn-missing", "paddle")
    assert s.evidence["needs"]["pin"] == "nvidia-cudnn-cu12==9.5.1.17" and str(old9) in str(s.evidence["other_copies"])
    _, _, p = plan_for(env.python, environ)
    assert any(a.kind == "pip-install" and a.packages == ("nvidia-cudnn-cu12==9.5.1.17",) for a in p.actions)


def test_paddle_cpu_build_needs_no_cudnn(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    add_paddle_gpu(env, with_gpu=False)  # as installed: its RECORD matches (paddle's files are checked too)
    facts, symptoms = run_diagnosis(env.python, environ)
    assert not fw(facts, "paddle").gpu_build and names(symptoms, "error") == []


# -- JAX: two wheels, one framework --------------------------------------------------------------------

def test_jax_plugin_and_pjrt_wheels_are_one_framework(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    env.add_jax_plugin("0.7.2", 12)
    env.add_dist("jax-cuda12-pjrt", "0.7.2", [])
    env.add_cudnn_wheel("9.8.0.87", 12)
    env.add_cuda_wheels(12, "12.8.90")
    facts, symptoms = run_diagnosis(env.python, environ)
    jax = [f for f in facts.frameworks if f.name == "jax"]
    assert len(jax) == 1 and jax[0].distribution == "jax-cuda12-plugin"
    assert jax[0].loaded_by.endswith("xla_cuda_plugin.so") and "jax-cuda12-pjrt" in jax[0].notes[-1]
    need = next(n for n in jax[0].needs if n.library == "cudnn")
    assert need.minimum == "9.8"
    assert len({s.summary for s in symptoms if s.evidence.get("framework") == "jax"}) == \
        len([s for s in symptoms if s.evidence.get("framework") == "jax"])


# -- CuPy: optional libraries are notes, never symptoms -----------------------------------------------

def test_cupy_optional_cudnn_is_named_but_never_a_symptom(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    libs = "cupy_backends/cuda/libs"
    files = [env._lib(f"{libs}/cudnn.cpython-311-x86_64-linux-gnu.so", None, env.site, needed=["libcudnn.so.8"]),
             env._lib(f"{libs}/nccl.cpython-311-x86_64-linux-gnu.so", None, env.site, needed=["libnccl.so.2"]),
             env._lib(f"{libs}/cublas.cpython-311-x86_64-linux-gnu.so", None, env.site, needed=["libcublas.so.12"])]
    env.add_dist("cupy-cuda12x", "13.6.0", files)
    env.add_cuda_wheels(12, "12.8.90")
    facts, symptoms = run_diagnosis(env.python, environ)
    cupy = fw(facts, "cupy")
    assert any("cupy.cudnn needs libcudnn.so.8" in n for n in cupy.notes)
    assert any("cupy.nccl needs libnccl.so.2" in n for n in cupy.notes)
    assert not [n for n in cupy.notes if "cublas" in n]  # not an optional library
    assert [s for s in symptoms if s.evidence.get("framework") == "cupy" and s.name.startswith("cudnn")] == []


def test_the_ort_provider_load_failure_is_explained_as_a_missing_cudnn():
    """The message users see (microsoft/onnxruntime#25609) maps to the symptoms fixdnn now finds for ORT."""
    from fixdnn.probes.explain import match_text
    from fixdnn.symptoms.registry import load_rules

    text = ("[ONNXRuntimeError] : 1 : FAIL : Failed to load library libonnxruntime_providers_cuda.so with error: "
            "libcudnn.so.9: cannot open shared object file: No such file or directory")
    [m] = match_text(text, load_rules(include_user=False).errors)
    assert "onnxruntime" in m.signature.frameworks and "cudnn-not-on-search-path" in m.signature.symptoms
