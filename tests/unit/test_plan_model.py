"""The plan model, property-style over the rule files: every remedy's example case, turned into facts that
show its symptom, then changed by the remedy's own steps in the model, no longer shows the symptom and shows
no new error. A remedy made only of manual steps cannot be modelled, and the model says so.

Facts are synthesised from each case's evidence (paths, versions, where each copy is found); the loads are
then derived by the model's own loader walk from those copies, so the before and after states are judged
by the same rules the planner uses.
"""

from __future__ import annotations

import posixpath
from dataclasses import replace

import pytest

from fixdnn.knowledge import compat as compat_mod
from fixdnn.model.facts import (CpuFacts, Distribution, Facts, Framework, InstallCheck, BadFile, LibraryCopy,
                                LoaderStep, LoadOutcome, Need, PathEntry, Resolution, TargetInfo)
from fixdnn.plan import context as context_mod
from fixdnn.plan.build import RenderError, alternatives, build_actions, scope_for
from fixdnn.model.actions import Action
from fixdnn.plan.model import AlreadyInstalled, Unmodelled, _relink, apply_action, prove, symptom_key
from fixdnn.symptoms.registry import Symptom, diagnose, load_rules

RULES = load_rules(include_user=False)
COMPAT = compat_mod.load()
SITE = "/env/site"
DEFAULT_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib", "/usr/lib")


def _target(sys_path: list[tuple[str, str]]) -> TargetInfo:
    return TargetInfo("/env/bin/python", "3.11.9", "/env", "/usr", "venv", "linux", "x86_64", (SITE,), None, False,
                      tuple(p for p, _ in sys_path), tuple(o for _, o in sys_path), "/w", True)


def _site_of(ev: dict) -> str:
    """The site directory the case's paths use (/env/site, /env/lib/python3.11/site-packages ...)."""
    text = repr(ev)
    for mark in ("/nvidia/cudnn/lib",):
        for part in text.split("'"):
            if part.startswith("/env/") and mark in part:
                return part.split(mark, 1)[0]
    return SITE


def _cudnn_facts(ev: dict, ctx: dict) -> Facts:
    site = _site_of(ev)
    fw = ev.get("framework", "torch")
    fw_ctx = dict(ctx.get("frameworks", {}).get(fw, {}))
    needs = dict(ev.get("needs") or {})
    major = int(needs.get("major") or 9)
    cuda = "13.0" if fw == "torch" else "12.5.1"
    wheel = f"nvidia-cudnn-cu{cuda.split('.')[0]}"
    pin = needs.get("pin") or fw_ctx.get("cudnn_pin")
    if ev.get("distribution") and ev.get("pinned"):
        wheel, pin = ev["distribution"], f"{ev['distribution']}=={ev['pinned']}"
    pin = pin if fw == "torch" or ev.get("pinned") else None
    wheel = pin.split("==")[0] if pin else wheel
    minimum = needs.get("minimum") or ("9.24" if fw == "torch" else "9.3")
    good = minimum + ".0"
    # every copy the evidence names: (path, version, found_in)
    copies: dict[str, tuple[str, tuple[str, ...]]] = {}
    loaded = dict(ev.get("loaded") or {})
    for c in ev.get("usable_copies") or []:
        copies[c["path"]] = (c.get("version") or good, tuple(c.get("found_in") or ()))
    if ev.get("expected"):
        copies[ev["expected"]["path"]] = (good, ())
    if ev.get("shim"):
        copies[ev["shim"]] = (next((v for v, names in (ev.get("versions") or {}).items()
                                    if f"libcudnn.so.{major}" in names), good), ())
    if loaded.get("path"):
        copies[loaded["path"]] = (loaded.get("version") or "9.13.0", tuple(loaded.get("found_in") or ()))
    in_site = loaded.get("path", "").startswith(f"{site}/nvidia/cudnn/lib/")
    installed = ev.get("installed") or dict(ctx.get("installed", {})).get(wheel) or \
        (f"{loaded.get('version')}.0" if in_site else None) or (pin.split("==")[1] if pin else "9.3.0.75")
    env: dict[str, str] = {}
    sys_path = [("/w", "cwd"), ("/usr/lib/python3.11", "stdlib"), (site, "site")]
    via = str(ev.get("via") or "") + str(ev.get("shadowed_by") or "")
    entry = ev.get("entry") or {}
    if entry.get("origin") in ("pythonpath", "user-site"):
        at = 1 if entry["origin"] == "pythonpath" else len(sys_path) - 1  # the user site precedes site-packages
        sys_path.insert(at, (entry["path"], entry["origin"]))
        if entry["origin"] == "pythonpath":
            env["PYTHONPATH"] = entry["path"]
    ld = [posixpath.dirname(p) for p, (_, where) in copies.items() if any("LD_LIBRARY_PATH" in w for w in where)]
    if "LD_LIBRARY_PATH" in via and ev.get("shadowing_dir"):
        ld.append(ev["shadowing_dir"])
    if ld:
        env["LD_LIBRARY_PATH"] = ":".join(dict.fromkeys(ld))
    if "LD_PRELOAD" in via or any("LD_PRELOAD" in w for _, (_, ws) in copies.items() for w in ws):
        env["LD_PRELOAD"] = loaded["path"]
    libs, dists = [], []
    required, _ = COMPAT.cudnn_sets[major]
    missing = set(ev.get("missing") or ())
    sub_versions = {n: v for v, names in (ev.get("versions") or {}).items() for n in names}
    for path, (version, where) in copies.items():
        folder = posixpath.dirname(path)
        owned = folder == f"{site}/nvidia/cudnn/lib"
        owner = f"pip:{wheel} {installed}" if owned else None
        for fam in required:
            name = f"lib{fam}.so.{major}"
            if name in missing:
                continue
            lib_path = f"{folder}/{name}"
            libs.append(LibraryCopy(fam, lib_path, lib_path, name, sub_versions.get(name, version), "case", owner,
                                    where if fam == "cudnn" else ()))
    if any(posixpath.dirname(p) == f"{site}/nvidia/cudnn/lib" for p in copies) or ev.get("distribution"):
        dists.append(Distribution(wheel, wheel, installed, site, f"{site}/{wheel}.dist-info"))
    dist_name = fw_ctx.get("distribution", fw)
    fw_version = fw_ctx.get("version", "2.14.1+cu130" if fw == "torch" else "2.20.0")
    # TensorFlow's [and-cuda] extra pins its cuDNN wheel (its METADATA: Requires-Dist ...; extra == "and-cuda")
    requires = (pin,) if pin else ('nvidia-cudnn-cu12==9.3.0.75; extra == "and-cuda"',)
    dists.append(Distribution(dist_name, dist_name, fw_version, site, f"{site}/{dist_name}.dist-info", requires))
    framework = Framework(fw, dist_name, fw_version, True, cuda, (Need("cudnn", major, minimum, pin, "case", wheel),))
    cache = [p for p, (_, w) in copies.items() if "ld.so.cache" in w]
    runpath = f"{site}/{fw}/../nvidia/cudnn/lib"
    search = [LoaderStep("DT_RUNPATH", runpath, "order", "DT_RUNPATH")] + \
        [LoaderStep("ld.so.cache", p, "order", "ld.so.cache") for p in cache] + \
        [LoaderStep("default-dirs", d, "order", "default-dirs") for d in DEFAULT_DIRS]
    soname = f"libcudnn.so.{major}"
    preload = ("torch preload: sys.path (synthesised)",) if fw == "torch" else ()
    unresolved = LoadOutcome(fw, "cudnn", soname, None, Resolution(soname, None, None, None, ()), preload,
                             tuple(search))
    target = _target(sys_path)
    bare = Facts(replace(target, site_dirs=(site,)), tuple(dists), (framework,), (), (unresolved,), env=env)
    return _relink(bare, Facts(bare.target, bare.distributions, bare.frameworks, tuple(libs), bare.loads,
                               env=env), COMPAT, "the case")


def _env_facts(ev: dict, ctx: dict) -> Facts:
    env = {ev["variable"]: str(ev["value"])}
    cpu = CpuFacts(cpu_count=int(ev.get("cpu_count") or 8), cpu_count_source="case")
    return Facts(_target([(SITE, "site")]), env=env, cpu=cpu)


def _path_facts(ev: dict, ctx: dict) -> Facts:
    entry = PathEntry(ev["variable"], 0, ev["entry"], "absolute", bool(ev.get("exists")), False, None)
    return Facts(_target([(SITE, "site")]), env={ev["variable"]: ev["entry"]}, cpu=CpuFacts(search_path=(entry,)))


def _integrity_facts(ev: dict, ctx: dict) -> Facts:
    bad = tuple(BadFile(b["path"], b["problem"]) for b in ev["bad_files"])
    check = InstallCheck(ev["distribution"], ev["version"], ev["source"], ev["record"], ev["checked"], 0, bad,
                         ev["bad_count"])
    dist = Distribution(ev["distribution"], ev["distribution"], ev["version"], SITE, posixpath.dirname(ev["record"]))
    return Facts(_target([(SITE, "site")]), (dist,), integrity=(check,))


def _gpu_facts(ev: dict, ctx: dict) -> Facts:
    """A GPU machine shape from a GPU case: the GPU, the driver and its libcuda, torch and its kernels."""
    from fixdnn.model.facts import Driver, FrameworkKernels, Gpu, GpuFacts, KernelImages, LibCuda

    kernel = ev.get("kernel") or (ev.get("fix") or {}).get("driver_minimum") or "580.65.06"
    driver_lib = LibCuda("/usr/lib/x86_64-linux-gnu/libcuda.so.1", f"/usr/lib/x86_64-linux-gnu/libcuda.so.{kernel}",
                         "driver", kernel, "file name", found_in="default directory /usr/lib/x86_64-linux-gnu")
    env: dict[str, str] = {}
    if "wsl_lib" in ev:  # WSL2: no kernel module; the Windows driver's library is in /usr/lib/wsl/lib
        wsl = LibCuda(f"{ev['wsl_lib']}/libcuda.so.1", f"{ev['wsl_lib']}/libcuda.so.1", "wsl",
                      found_in="WSL2 driver folder")
        gpu = GpuFacts(libcuda=driver_lib if ev.get("picked") else None, libcuda_copies=(wsl,), wsl=True)
        return Facts(_target([(SITE, "site")]), gpu=gpu)
    if "compat_version" in ev:  # a cuda-compat libcuda.so.1 reached through LD_LIBRARY_PATH
        env["LD_LIBRARY_PATH"] = ev["directory"]
        compat = LibCuda(ev["libcuda"], f"{ev['directory']}/libcuda.so.{ev['compat_version']}", "compat",
                         ev["compat_version"], "file name", found_in="LD_LIBRARY_PATH[0]")
        gpu = GpuFacts(gpus=(Gpu("NVIDIA GeForce RTX 4090", "8.9", "nvidia-smi", "nvidia-smi"),), libcuda=compat,
                       libcuda_copies=(driver_lib,))
        return Facts(_target([(SITE, "site")]), driver=Driver(kernel, "/proc/driver/nvidia/version"), env=env, gpu=gpu)
    version = ev["version"]
    dist = Distribution("torch", "torch", version, SITE, f"{SITE}/torch-{version}.dist-info")
    fw = Framework("torch", "torch", version, True, cuda="12.6" if "cu126" in version else "13.0")
    lib = KernelImages(f"{SITE}/torch/lib/libtorch_cuda.so", tuple(ev.get("sass", ())), tuple(ev.get("ptx", ())),
                       ev.get("ptx_isa") or ("9.0" if ev.get("ptx") else None), 10, containers=2)
    gpu = GpuFacts(gpus=(Gpu(ev["gpu"], ev["cc"], "nvidia-smi", "nvidia-smi"),), libcuda=driver_lib,
                   kernels=(FrameworkKernels("torch", version, (lib,)),))
    return Facts(_target([(SITE, "site")]), (dist,), (fw,), driver=Driver(kernel, "/proc/driver/nvidia/version"),
                 gpu=gpu)


def _lock_facts(ev: dict, ctx: dict) -> Facts:
    """The environment and the lockfile of a drift case: the installed distribution (unless it is missing),
    the locked package (unless it is an extra), read with the shipped relevance patterns."""
    from fixdnn.facts.integrity import load_patterns
    from fixdnn.model.facts import LockedPackage, LockFacts

    name, patterns = ev["name"], load_patterns()
    dists = () if ev["change"] == "missing" else (
        Distribution(name, name, ev["installed_version"], SITE, f"{SITE}/{name}-{ev['installed_version']}.dist-info"),)
    locked = () if ev["change"] == "extra" else (LockedPackage(name, ev["manager"], ev["locked_version"]),)
    lock = LockFacts(ev["lockfile"], ev["platform"], locked, patterns.pip, patterns.conda)
    return Facts(_target([(SITE, "site")]), dists, lock=lock)


def _cuda_facts(ev: dict, ctx: dict) -> Facts:
    """A CUDA runtime case: the framework needs one CUDA library family; it looks in the folder its wheel
    installs into (DT_RUNPATH), then the loader cache, then the default folders. The copies the evidence
    names (elsewhere on disk, or the one that loads) are where it says."""
    from fixdnn.plan.model import _wheel_libs

    fw, lib, cuda = ev["framework"], ev["library"], ev["cuda"]
    loaded = dict(ev.get("loaded") or {})
    soname = ev.get("soname") or f"lib{lib}.so.{ev['needs_major']}"
    major = int(soname.rsplit(".", 1)[1])
    cuda_major = int(cuda.split(".")[0])
    wheel = ev.get("wheel") or COMPAT.wheel_for(lib, cuda_major)
    fw_ctx = dict(ctx.get("frameworks", {}).get(fw, {}))
    dist_name = fw_ctx.get("distribution", fw)
    fw_version = fw_ctx.get("version", "2.14.1+cu130" if fw == "torch" else "2.20.0")
    pins = dict(ctx.get("pins", {}))
    installed = dict(ctx.get("installed", {}))
    # where the framework looks first: the folders its CUDA wheels install into
    runpaths = sorted({f"{SITE}/{folder}" for folder, name in _wheel_libs(wheel, "0", COMPAT)} |
                      {f"{SITE}/nvidia/cu{cuda_major}/lib"})
    requires = tuple(f"{w}=={v}" for w, v in pins.items())
    if fw == "tensorflow":  # the [and-cuda] extra pins the CUDA wheels of its build (its METADATA)
        requires += tuple(f'{COMPAT.wheel_for(f, cuda_major)}=={cuda}.0; extra == "and-cuda"'
                          for f in ("cudart", "cublas"))
    dists = [Distribution(dist_name, dist_name, fw_version, SITE, f"{SITE}/{dist_name}.dist-info", requires)]
    libs = []
    if wheel in installed:  # installed, but the library is missing from it
        dists.append(Distribution(wheel, wheel, installed[wheel], SITE, f"{SITE}/{wheel}.dist-info"))
    for path in ev.get("other_copies") or ():
        libs.append(LibraryCopy(lib, path, path, soname, f"{cuda}.0", "case", None, ()))
    if loaded.get("path"):
        libs.append(LibraryCopy(lib, loaded["path"], loaded["path"], soname, loaded["version"], "case", None,
                                ("ld.so.cache",)))
    cache = [LoaderStep("ld.so.cache", loaded["path"], "order", "ld.so.cache")] if loaded.get("path") else []
    search = [LoaderStep("DT_RUNPATH", d, "order", "DT_RUNPATH") for d in runpaths] + cache + \
        [LoaderStep("default-dirs", d, "order", "default-dirs") for d in DEFAULT_DIRS]
    framework = Framework(fw, dist_name, fw_version, True, cuda, (Need(lib, major, None, None, "case", wheel),))
    unresolved = LoadOutcome(fw, lib, soname, None, Resolution(soname, None, None, None, ()), (), tuple(search))
    bare = Facts(_target([(SITE, "site")]), tuple(dists), (framework,), (), (unresolved,))
    return _relink(bare, replace(bare, libraries=tuple(libs)), COMPAT, "the case")


def _mkl_facts(ev: dict, ctx: dict) -> Facts:
    """MKL's case: the GNU OpenMP runtime the evidence names is mapped (by torch), MKL's runtime is reachable,
    mkl-service installed as the evidence says, MKL_THREADING_LAYER as it says."""
    from fixdnn.model.facts import NativeLib, RuntimeUse

    gomp = ev["gnu_runtimes"][0]["path"]
    mkl = f"{SITE}/../../libmkl_rt.so.2"
    libs = (NativeLib("openmp", "libgomp", "gnu", "runtime", gomp, gomp, "libgomp.so.1"),
            NativeLib("mkl", "libmkl_rt", "intel", "rt", mkl, mkl, "libmkl_rt.so.2", "2"))
    uses = (RuntimeUse("torch", f"{SITE}/torch/lib/libtorch_cpu.so", "libgomp.so.1", gomp, "DT_NEEDED"),
            RuntimeUse("numpy", f"{SITE}/numpy/core/_multiarray_umath.so", "libmkl_rt.so.2", mkl, "DT_NEEDED"))
    dists = tuple(Distribution(o[4:].split(" ")[0], o[4:].split(" ")[0], o.split(" ")[1], SITE, f"{SITE}/x.dist-info")
                  for o in ev.get("mkl_service") or ())
    env = {"MKL_THREADING_LAYER": ev["variable"]} if ev.get("variable") else {}
    return Facts(_target([(SITE, "site")]), dists, env=env, cpu=CpuFacts(cpu_count=8, libraries=libs, uses=uses))


SYNTH = {"kmp-duplicate-lib-ok": _env_facts, "thread-env-invalid": _env_facts,
         "ld-library-path-missing-dir": _path_facts, "ld-preload-dnn": _path_facts,
         "install-corrupted": _integrity_facts, "lockfile-drift": _lock_facts,
         "cuda-runtime-missing": _cuda_facts, "cuda-runtime-mismatch": _cuda_facts,
         "mkl-threading-layer-conflict": _mkl_facts}
SYNTH.update({name: _cudnn_facts for name in ("cudnn-missing", "cudnn-version-mismatch", "cudnn-pin-mismatch",
                                               "cudnn-shadowed", "cudnn-incomplete", "cudnn-not-on-search-path")})
SYNTH.update({name: _gpu_facts for name in ("gpu-no-kernel", "gpu-ptx-only", "wsl-libcuda-shadowed",
                                             "cuda-compat-libcuda")})
# Symptoms whose remedies the model cannot prove, and why: the planner prefers a manual step for them, and
# marks an automatic one it shows anyway as unproven.
UNPROVABLE = {"library-symbol-missing": "the symbols a release defines are read from its files; the model has "
              "not read the release a pin would install, so it cannot say the symbol appears"}
CASES = [(r, n, c) for r in RULES.remedies for n, c in enumerate(r.cases) if c.expect]


@pytest.mark.parametrize("remedy,n,case", CASES, ids=[f"{r.id}#{n}" for r, n, _ in CASES])
def test_every_remedy_case_removes_its_symptom_in_the_model(remedy, n, case):
    ctx = context_mod.from_dict(case.context)
    symptom = Symptom("FDN000", remedy.symptom, "error", "case", dict(case.evidence))
    actions = build_actions(remedy, scope_for(case.evidence, ctx, alternatives(symptom, COMPAT)), ctx, remedy.symptom)
    if all(a.kind == "manual" for a in actions):
        with pytest.raises(Unmodelled, match="a manual step"):
            apply_action(Facts(_target([])), actions[0], COMPAT)
        return
    make = SYNTH.get(remedy.symptom)
    if remedy.symptom in UNPROVABLE:
        pytest.skip(f"{remedy.symptom}: {UNPROVABLE[remedy.symptom]}")
    assert make is not None, f"no facts synthesised for {remedy.symptom}: add a synthesiser to SYNTH"
    facts = make(dict(case.evidence), dict(case.context))
    before = diagnose(facts, COMPAT)
    targets = [s for s in before if s.name == remedy.symptom]
    assert targets, f"the synthesised facts do not show {remedy.symptom}: {[s.name for s in before]}"
    after_facts = facts
    for a in actions:
        after_facts = apply_action(after_facts, a, COMPAT)
    after = diagnose(after_facts, COMPAT)
    after_keys = {symptom_key(s) for s in after}
    assert not [t for t in targets if symptom_key(t) in after_keys], [s.summary for s in after]
    # No new error -- where the case has somewhere else to go. A case whose evidence shows no other usable
    # copy describes a step the planner's model rejects (it would leave cuDNN missing), which is the point.
    before_keys = {symptom_key(s) for s in before}
    new = [s for s in after if s.severity == "error" and symptom_key(s) not in before_keys]
    if case.evidence.get("usable_copies") == [] and remedy.symptom == "cudnn-version-mismatch":
        assert {s.name for s in new} <= {"cudnn-missing"}, [s.summary for s in new]
    else:
        assert not new, [s.summary for s in new]


def test_rendering_errors_are_not_swallowed():
    """A case whose templates cannot render is a broken rule, not a skipped proof."""
    remedy = next(r for r in RULES.remedies if r.id == "cudnn-missing.framework-pin")
    ctx = context_mod.from_dict({})
    with pytest.raises(RenderError):
        build_actions(remedy, scope_for({"framework": "torch"}, ctx), ctx, remedy.symptom)


def test_an_installed_pin_changes_nothing_without_force_reinstall_which_restores_files():
    ev = {"framework": "torch", "shim": f"{SITE}/nvidia/cudnn/lib/libcudnn.so.9", "missing": ["libcudnn_cnn.so.9"],
          "versions": {}}
    facts = _cudnn_facts(ev, {"frameworks": {"torch": {"cudnn_pin": "nvidia-cudnn-cu13==9.24.0.43"}}})
    assert [s.name for s in diagnose(facts, COMPAT) if s.severity == "error"] == ["cudnn-incomplete"]
    pin = Action("pip-install", packages=("nvidia-cudnn-cu13==9.24.0.43",), pip_args=("--only-binary=:all:",))
    with pytest.raises(AlreadyInstalled, match="pip would change nothing"):
        apply_action(facts, pin, COMPAT)
    forced = replace(pin, pip_args=pin.pip_args + ("--force-reinstall", "--no-deps"))
    after = apply_action(facts, forced, COMPAT)
    assert f"{SITE}/nvidia/cudnn/lib/libcudnn_cnn.so.9" in {c.path for c in after.libraries}
    assert not [s for s in diagnose(after, COMPAT) if s.severity == "error"]


def test_removing_the_only_reaching_entry_is_rejected_with_the_new_error():
    """The issue's case: stale cuDNN on LD_LIBRARY_PATH, a good copy only in /opt that nothing reaches."""
    ev = {"framework": "torch", "needs": {"major": 9, "minimum": "9.24"},
          "loaded": {"path": "/stale/lib/libcudnn.so.9", "version": "9.1.0", "found_in": ["LD_LIBRARY_PATH[0]"]},
          "usable_copies": [{"path": "/opt/cudnn/lib/libcudnn.so.9", "version": "9.24.0", "found_in": ["/opt scan"]}]}
    facts = _cudnn_facts(ev, {})
    before = diagnose(facts, COMPAT)
    drop = Action("path-remove", name="LD_LIBRARY_PATH", value="/stale/lib")
    proof, _, _ = prove(facts, before, [drop], [s for s in before if s.name == "cudnn-version-mismatch"], COMPAT,
                        diagnose)
    assert not proof.proven and proof.reason == "in the model: new error cudnn-not-on-search-path (torch)"
    put_first = Action("path-prepend", name="LD_LIBRARY_PATH", value="/opt/cudnn/lib")
    proof, after, _ = prove(facts, before, [put_first], [s for s in before if s.name == "cudnn-version-mismatch"],
                            COMPAT, diagnose)
    assert proof.proven and after.env["LD_LIBRARY_PATH"] == "/opt/cudnn/lib:/stale/lib"
    with pytest.raises(Unmodelled, match="nothing is known about /nowhere"):
        apply_action(facts, replace(put_first, value="/nowhere"), COMPAT)
