"""Every way another cuDNN gets in front of the framework's own (issue 11 items 2 and 3): LD_PRELOAD, and the
import path (PYTHONPATH with a ``pip install --target`` wheel, ``.pth`` files, the user site). Each names the
cause with the entry and its origin, plans the removal of the shadow (never a reinstall of the pin that is
already installed), and has a healthy twin that stays silent."""

from __future__ import annotations

import os
import shutil

from tests.conftest import names, run_diagnosis
from tests.envkit.env import EnvBuilder, stray_cudnn
from tests.unit.test_plan import for_symptom, plan_for


def by_name(symptoms, name):
    found = [s for s in symptoms if s.name == name]
    assert found, f"{name} not found in {[s.name for s in symptoms]}"
    return found[0]


def cudnn_names(symptoms):
    return [n for n in names(symptoms) if n.startswith("cudnn")]


# -- LD_PRELOAD ----------------------------------------------------------------------------------------

def test_ld_preload_of_an_old_cudnn_is_what_torch_loads(torch_env, environ, tmp_path):
    """torch's DT_RPATH beats LD_LIBRARY_PATH, but nothing beats LD_PRELOAD: the preloaded 9.13 answers
    libcudnn.so.9 for torch's own preload and its DT_NEEDED alike."""
    old = stray_cudnn(tmp_path / "old", "9.13.0")
    environ["LD_PRELOAD"] = str(old / "libcudnn.so.9")
    facts, symptoms = run_diagnosis(torch_env.python, environ)
    load = next(o for o in facts.loads_of("torch") if o.library == "cudnn")
    assert load.path == str(old / "libcudnn.so.9") and load.resolution.source == "already-loaded"
    assert load.preload[0].startswith("LD_PRELOAD[0]")
    # its sub-libraries come from the preloaded shim's own folder
    graph = next(o for o in facts.loads_of("torch") if o.library == "cudnn_graph")
    assert graph.path.startswith(str(old))
    s = by_name(symptoms, "cudnn-version-mismatch")
    assert s.evidence["loaded"]["version"] == "9.13.0" and s.evidence["shadowed_by"].startswith("LD_PRELOAD[0]")
    assert any("forced in by LD_PRELOAD[0]" in line for line in s.chain)
    _, _, p = plan_for(torch_env.python, environ)
    assert [(a.kind, a.name, a.value) for a in p.actions] == [("path-remove", "LD_PRELOAD", str(old / "libcudnn.so.9"))]
    assert "cudnn-version-mismatch" in p.actions[0].fixes


def test_ld_preload_of_a_tarball_file_name_still_answers_the_soname(tf_env, environ, tmp_path):
    old = stray_cudnn(tmp_path / "old", "9.1.0")
    environ["LD_PRELOAD"] = f"{old / 'libcudnn.so.9.1.0'} "  # ld.so also splits on spaces
    facts, symptoms = run_diagnosis(tf_env.python, environ)
    s = by_name(symptoms, "cudnn-version-mismatch")
    assert s.evidence["loaded"]["version"] == "9.1.0" and "LD_PRELOAD" in s.evidence["shadowed_by"]


def test_healthy_twin_ld_preload_of_the_wheels_own_copy(torch_env, environ):
    environ["LD_PRELOAD"] = str(torch_env.cudnn_lib / "libcudnn.so.9")
    facts, symptoms = run_diagnosis(torch_env.python, environ)
    assert cudnn_names(symptoms) == [] and names(symptoms, "error") == []
    assert names(symptoms, "warning") == ["ld-preload-dnn"]  # a setting not to keep, but not a breakage


def test_a_missing_ld_preload_file_changes_nothing(torch_env, environ, tmp_path):
    environ["LD_PRELOAD"] = str(tmp_path / "gone/libcudnn.so.9")
    facts, symptoms = run_diagnosis(torch_env.python, environ)
    assert cudnn_names(symptoms) == []
    load = next(o for o in facts.loads_of("torch") if o.library == "cudnn")
    assert load.path.startswith(str(torch_env.site))


# -- the import path -----------------------------------------------------------------------------------

def test_pip_install_target_on_pythonpath_is_named_and_removed(torch_env, environ, tmp_path):
    """The issue's case: `pip install --target DIR nvidia-cudnn-cu13==9.13.0.50` and PYTHONPATH=DIR. The
    DIR copy has its own dist-info (it hides site-packages' 9.24 from the distribution list)."""
    target = tmp_path / "target dir"
    EnvBuilder(target, real_python=False).add_cudnn_wheel("9.13.0.50", 13, location=target)
    environ["PYTHONPATH"] = str(target)
    facts, symptoms = run_diagnosis(torch_env.python, environ)
    s = by_name(symptoms, "cudnn-shadowed")
    assert s.evidence["entry"] == {"index": 1, "path": str(target), "origin": "pythonpath"}
    assert s.evidence["expected"]["path"] == str(torch_env.cudnn_lib / "libcudnn.so.9")
    mismatch = by_name(symptoms, "cudnn-version-mismatch")
    assert mismatch.evidence["entry"]["origin"] == "pythonpath" and mismatch.evidence["shadowed_by"]
    assert "cudnn-pin-mismatch" not in names(symptoms)  # the pin is installed, behind DIR
    _, _, p = plan_for(torch_env.python, environ)
    assert [(a.kind, a.name, a.value) for a in p.actions] == [("path-remove", "PYTHONPATH", str(target))]
    assert not [a for a in p.actions if a.kind == "pip-install"]


def test_pth_file_that_inserts_in_front_is_named_with_its_origin(torch_env, environ, tmp_path):
    """A plain .pth line is appended after its own site dir and cannot shadow it; an executable .pth line
    (``import sys; sys.path.insert(0, ...)``, as old easy-install.pth files do) puts its entry first."""
    extra = tmp_path / "extra libs"
    EnvBuilder(extra, real_python=False).add_cudnn_wheel("9.13.0.50", 13, location=extra, dist=False)
    (torch_env.site / "aaa-extra.pth").write_text(f"import sys; sys.path.insert(0, {str(extra)!r})\n")
    facts, symptoms = run_diagnosis(torch_env.python, environ)
    s = by_name(symptoms, "cudnn-shadowed")
    assert s.evidence["entry"]["path"] == str(extra) and s.evidence["entry"]["origin"] == "pth"
    _, _, p = plan_for(torch_env.python, environ)
    [a] = for_symptom(p, "cudnn-version-mismatch")
    assert a.kind == "manual" and str(extra) in a.text and not [x for x in p.actions if x.kind == "pip-install"]


def test_healthy_twin_a_plain_pth_line_comes_after_site_packages(torch_env, environ, tmp_path):
    extra = tmp_path / "extra libs"
    EnvBuilder(extra, real_python=False).add_cudnn_wheel("9.13.0.50", 13, location=extra, dist=False)
    (torch_env.site / "aaa-extra.pth").write_text(f"{extra}\n")
    facts, symptoms = run_diagnosis(torch_env.python, environ)
    assert str(extra) in facts.target.sys_path and cudnn_names(symptoms) == []


def test_healthy_twin_pythonpath_without_cudnn(torch_env, environ, tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "helper.py").write_text("x = 1\n")
    environ["PYTHONPATH"] = str(plain)
    _, symptoms = run_diagnosis(torch_env.python, environ)
    assert cudnn_names(symptoms) == [] and names(symptoms, "error") == [] and names(symptoms, "warning") == []


def test_the_wheel_removed_from_site_packages_is_not_shadowing(torch_env, environ, tmp_path):
    """Only DIR has cuDNN: nothing is shadowed, the mismatch reinstalls the pin (there is nothing to unshadow)."""
    shutil.rmtree(torch_env.cudnn_lib.parent)
    shutil.rmtree(next(torch_env.site.glob("nvidia_cudnn_cu13-*.dist-info")))
    target = tmp_path / "target"
    EnvBuilder(target, real_python=False).add_cudnn_wheel("9.13.0.50", 13, location=target)
    environ["PYTHONPATH"] = str(target)
    _, symptoms, p = plan_for(torch_env.python, environ)
    assert "cudnn-shadowed" not in names(symptoms)
    assert by_name(symptoms, "cudnn-version-mismatch").evidence["shadowed_by"] is None
    assert for_symptom(p, "cudnn-version-mismatch")[0].packages == ("nvidia-cudnn-cu13==9.24.0.43",)


# -- per framework: who walks sys.path and who does not --------------------------------------------------

def test_jax_plugin_shadowed_through_pythonpath_names_the_entry(tmp_path, environ):
    """Seen on real jax[cuda12] 0.10.2: the CUDA plugin loads nvidia.cudnn.__path__[0]/lib/libcudnn.so.9, and
    nvidia.cudnn comes from the first sys.path entry holding it: a `pip install --target DIR` cuDNN 9.1 on
    PYTHONPATH wins. The cause is the entry (PYTHONPATH DIR), not a library folder, and removing it is the fix."""
    env = EnvBuilder(tmp_path / "venv")
    env.add_jax_plugin("0.7.2", 12)
    env.add_cudnn_wheel("9.28.0.42", 12)
    env.add_cuda_wheels(12, "12.9.79")
    target = tmp_path / "target"
    EnvBuilder(target, real_python=False).add_cudnn_wheel("9.1.0.70", 12, location=target)
    environ["PYTHONPATH"] = str(target)
    facts, symptoms = run_diagnosis(env.python, environ)
    s = by_name(symptoms, "cudnn-shadowed")
    assert s.evidence["entry"] == {"index": 1, "path": str(target), "origin": "pythonpath"}
    assert s.evidence["expected"]["path"] == str(env.cudnn_lib / "libcudnn.so.9")
    assert by_name(symptoms, "cudnn-version-mismatch").evidence["entry"]["origin"] == "pythonpath"
    _, _, p = plan_for(env.python, environ)
    assert [(a.kind, a.name, a.value) for a in p.actions] == [("path-remove", "PYTHONPATH", str(target))]


def test_tensorflow_runpath_copy_is_its_own_whatever_pythonpath_holds(tf_env, environ, tmp_path):
    """Seen on real tensorflow[and-cuda] 2.21: TF dlopen()s libcudnn.so.9 through its own DT_RUNPATH
    ($ORIGIN/../nvidia/cudnn/lib), which never looks at sys.path, so a cuDNN 9.1 wheel on PYTHONPATH is not
    used (TF's DsoLoader opens site-packages' 9.28). Its dist-info hides site-packages' from the
    distribution list; that must not turn the copy TF really loads into a "shadow" of the unused one."""
    target = tmp_path / "target"
    EnvBuilder(target, real_python=False).add_cudnn_wheel("9.1.0.70", 12, location=target)
    environ["PYTHONPATH"] = str(target)
    facts, symptoms = run_diagnosis(tf_env.python, environ)
    load = next(o for o in facts.loads_of("tensorflow") if o.library == "cudnn")
    assert os.path.realpath(load.path) == os.path.realpath(tf_env.cudnn_lib / "libcudnn.so.9")
    assert cudnn_names(symptoms) == [] and names(symptoms, "error") == [] and names(symptoms, "warning") == []


def test_an_older_shim_never_reaches_for_optional_sub_libraries_of_a_newer_release(tf_env, environ, tmp_path):
    """Seen with real cuDNN 9.1.0 (a bare lib/ folder) ahead of the 9.28 wheel on LD_LIBRARY_PATH: the 9.1 shim
    predates libcudnn_engines_tensor_ir.so.9 and never dlopen()s it, so the 9.28 one further down the path is
    not "mixed in". Optional sub-libraries count only beside the shim that would load them."""
    from tests.envkit.env import build_so, cudnn_int

    build_so(tf_env.cudnn_lib / "libcudnn_engines_tensor_ir.so.9", "libcudnn_engines_tensor_ir.so.9", runpath="$ORIGIN",
             functions={"cudnn_engines_tensor_ir_version": cudnn_int("9.3.0.75")})
    old = stray_cudnn(tmp_path / "old", "9.1.0")
    environ["LD_LIBRARY_PATH"] = f"{old}:{tf_env.cudnn_lib}"
    facts, symptoms = run_diagnosis(tf_env.python, environ)
    assert not [o for o in facts.loads_of("tensorflow") if o.library == "cudnn_engines_tensor_ir" and o.path]
    assert "cudnn-incomplete" not in names(symptoms)
    assert by_name(symptoms, "cudnn-version-mismatch").evidence["loaded"]["version"] == "9.1.0"
