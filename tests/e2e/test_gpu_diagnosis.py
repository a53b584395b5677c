"""The GPU side without a GPU: --root trees shaped like GPU machines (H100 / sm_90, RTX 5090 / sm_120,
A100 / sm_80), with real nvcc fat binaries in torch, /proc-like driver files, gcc-built libcuda.so.1,
WSL2 and cuda-compat layouts; saved facts diagnosed again; the cuDriverGetVersion probe and nvidia-smi
through the Host's subprocess door."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from fixdnn.facts import dumps, gather, loads_json
from fixdnn.facts import gpu as gpu_facts
from fixdnn.knowledge import compat as compat_mod
from fixdnn.symptoms.registry import diagnose, load_rules
from fixdnn.target.host import Host
from fixdnn.target.interpreter import TargetSpec
from tests.envkit.cli import run_fixdnn
from tests.envkit.cuda import fatbin_so, libcuda, nvml, proc_driver
from tests.envkit.elfkit import build_so
from tests.envkit.env import EnvBuilder

MULTIARCH = "usr/lib/x86_64-linux-gnu"
CU130 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
CU126 = ["sm_80", "sm_86", "sm_90"]  # the part of cu126's list that matters here (fewer nvcc runs)


def gpu_machine(tmp_path, *, torch="2.14.1+cu130", archs=CU130, gpus=(("0000:01:00.0", "NVIDIA H100 80GB HBM3"),),
            kernel: str | None = "580.65.06", user_space: str | None = "580.65.06", cuda=13000) -> Path:
    """A --root tree: a torch venv at /opt/env whose kernels are ``archs``, the NVIDIA kernel module
    ``kernel`` with ``gpus``, and the driver's libcuda.so.<user_space> in the multiarch lib dir."""
    root = tmp_path / "root"
    env = EnvBuilder(root / "opt/env", real_python=False)
    env.torch_cuda13()
    if torch != "2.14.1+cu130":
        (env.site / "torch/version.py").write_text(
            f"__version__ = {torch!r}\ncuda = {('13.0' if 'cu13' in torch else '12.6')!r}\n")
        meta = next(env.site.glob("torch-*.dist-info"))
        text = (meta / "METADATA").read_text().replace("Version: 2.14.1+cu130", f"Version: {torch}")
        (meta / "METADATA").write_text(text)
    fatbin_so(env.site / "torch/lib/libtorch_cuda_linalg.so", archs)
    (root / MULTIARCH).mkdir(parents=True)
    (root / MULTIARCH / "libc.so.6").write_text("")  # marks the multiarch layout for the loader model
    if kernel:
        proc_driver(root, kernel, gpus)
    if user_space:
        libcuda(root / MULTIARCH, user_space, cuda)
    return root


def run(root, environ, **env):
    host = Host(root=root, environ={**environ, **env})
    facts = gather(host, TargetSpec(prefix="/opt/env"))
    return facts, diagnose(facts, compat_mod.load())


def by_name(symptoms, name):
    found = [s for s in symptoms if s.name == name]
    assert found, f"{name} not in {[s.name for s in symptoms]}"
    return found[0]


def gpu_names(symptoms):
    return sorted(s.name for s in symptoms if s.code.startswith("FDN6"))


def plan_for(symptom):
    from fixdnn.plan import context as context_mod
    from fixdnn.plan.build import plan

    return plan([symptom], context_mod.from_dict({}), load_rules(), compat_mod.load())


def test_h100_with_torch_cu130_is_healthy_and_round_trips(tmp_path, environ):
    root = gpu_machine(tmp_path)
    facts, symptoms = run(root, environ)
    g = facts.gpu
    assert [(x.name, x.compute_capability, x.cc_source) for x in g.gpus] == [
        ("NVIDIA H100 80GB HBM3", "9.0", "by name in rules/compat/gpu.toml")]
    assert g.gpus[0].source == "/proc/driver/nvidia/gpus/0000:01:00.0/information"
    assert (g.libcuda.path, g.libcuda.version, g.libcuda.kind) == (f"/{MULTIARCH}/libcuda.so.1", "580.65.06", "driver")
    torch = next(k for k in g.kernels if k.framework == "torch")
    assert torch.sass == tuple(CU130)
    assert gpu_names(symptoms) == []
    again = loads_json(dumps(facts))  # fixdnn facts --json, diagnosed again elsewhere
    assert again == facts
    assert [s.name for s in diagnose(again, compat_mod.load())] == [s.name for s in symptoms]


def test_rtx_5090_on_a_cu126_build_has_no_kernel_and_the_fix_is_cu130(tmp_path, environ):
    root = gpu_machine(tmp_path, torch="2.14.1+cu126", archs=CU126,
                   gpus=(("0000:01:00.0", "NVIDIA GeForce RTX 5090"),))
    facts, symptoms = run(root, environ)
    s = by_name(symptoms, "gpu-no-kernel")
    assert s.severity == "error" and s.code == "FDN601"
    assert (s.evidence["sm"], s.evidence["sass"], s.evidence["ptx"]) == ("sm_120", CU126, [])
    assert s.evidence["fix"]["pin"] == "torch==2.14.1+cu130" and "sm_120" in s.evidence["fix"]["sass"]
    assert "RTX 5090" in s.summary and "sm_86" in s.summary
    actions = plan_for(s).actions
    assert [(a.kind, a.packages) for a in actions] == [("pip-install", ("torch==2.14.1+cu130",))]


def test_a100_ptx_only_with_a_driver_too_old_for_the_ptx(tmp_path, environ):
    root = gpu_machine(tmp_path, archs=["sm_90", "compute_75"], gpus=(("0000:07:00.0", "NVIDIA A100-SXM4-80GB"),),
                   kernel="570.133.07", user_space="570.133.07")
    facts, symptoms = run(root, environ)
    s = by_name(symptoms, "gpu-ptx-only")
    assert s.severity == "error" and s.evidence["too_old"] is True
    assert (s.evidence["ptx_isa"], s.evidence["cuda_needed"], s.evidence["driver_minimum"]) == ("9.0", "13.0", "580.65.06")
    assert s.evidence["driver_cuda"] == "12.8"  # from driver 570.133.07: no probe runs under --root
    assert "gpu-no-kernel" not in gpu_names(symptoms)
    assert [a.kind for a in plan_for(s).actions] == ["manual"]
    assert "580.65.06" in plan_for(s).actions[0].text


def test_a100_ptx_only_with_a_new_driver_is_a_warning(tmp_path, environ):
    root = gpu_machine(tmp_path, archs=["sm_90", "compute_75"], gpus=(("0000:07:00.0", "NVIDIA A100-SXM4-80GB"),))
    _, symptoms = run(root, environ)
    s = by_name(symptoms, "gpu-ptx-only")
    assert s.severity == "warning" and s.evidence["too_old"] is False


def test_arch_specific_machine_code_does_not_cover_the_next_gpu(tmp_path, environ):
    """sm_90a runs on 9.0 only; sm_100f runs on the 10.x family, so a B200 (10.0) is covered."""
    root = gpu_machine(tmp_path, archs=["sm_90a", "sm_100f"], gpus=(("0000:01:00.0", "NVIDIA B200"),
                                                                  ("0000:02:00.0", "NVIDIA GeForce RTX 5090")))
    facts, symptoms = run(root, environ)
    assert sorted(g.compute_capability for g in facts.gpu.gpus) == ["10.0", "12.0"]
    hits = [s for s in symptoms if s.name == "gpu-no-kernel"]
    assert [s.evidence["gpu"] for s in hits] == ["NVIDIA GeForce RTX 5090"]


def test_a_gpu_the_name_table_does_not_know_is_an_unknown(tmp_path, environ):
    root = gpu_machine(tmp_path, archs=CU126, gpus=(("0000:01:00.0", "NVIDIA Prototype X1"),))  # a list built anyway
    facts, symptoms = run(root, environ)
    assert facts.gpu.gpus[0].compute_capability is None
    assert any(u.what == "compute capability of NVIDIA Prototype X1" for u in facts.unknowns)
    assert "gpu-no-kernel" not in gpu_names(symptoms)


def test_a_build_without_fat_binaries_is_an_unknown_only_where_there_is_a_gpu(tmp_path, environ):
    root = gpu_machine(tmp_path)
    lib = next((root / "opt/env").glob("lib/python*/site-packages/torch/lib/libtorch_cuda_linalg.so"))
    lib.unlink()  # only the gcc-built libtorch_cuda.so is left: no device code at all
    facts, symptoms = run(root, environ)
    assert any(u.what == "kernels of torch" for u in facts.unknowns)
    assert "gpu-no-kernel" not in gpu_names(symptoms)
    for info in (root / "proc/driver/nvidia/gpus").glob("*/information"):
        info.unlink()
    facts, _ = run(root, environ)
    assert facts.gpu.gpus == () and not any(u.what == "kernels of torch" for u in facts.unknowns)


def test_user_space_driver_of_another_version(tmp_path, environ):
    root = gpu_machine(tmp_path, kernel="580.95.05", user_space="570.133.07")
    _, symptoms = run(root, environ)
    s = by_name(symptoms, "libcuda-version-mismatch")
    assert (s.evidence["user_space"], s.evidence["kernel"]) == ("570.133.07", "580.95.05")
    assert "reboot" in s.hint


def test_container_without_the_nvidia_runtime(tmp_path, environ):
    root = gpu_machine(tmp_path, user_space=None)
    (root / ".dockerenv").write_text("")
    facts, symptoms = run(root, environ)
    assert facts.gpu.libcuda is None and facts.gpu.container == "/.dockerenv"
    s = by_name(symptoms, "libcuda-missing")
    assert s.severity == "error" and s.evidence["container"] == "/.dockerenv"
    text = plan_for(s).actions[0].text
    assert "--gpus all" in text and "Container Toolkit" in text


def test_wsl2_layout(tmp_path, environ):
    root = gpu_machine(tmp_path, kernel=None, user_space=None, gpus=())
    libcuda(root / "usr/lib/wsl/lib", None, 12080)  # WSL ships a plain libcuda.so.1
    facts, symptoms = run(root, environ)
    assert facts.gpu.wsl and facts.gpu.libcuda is None
    s = by_name(symptoms, "wsl-libcuda-shadowed")
    assert s.evidence["picked"] == ""
    assert [(a.kind, a.value) for a in plan_for(s).actions] == [("path-prepend", "/usr/lib/wsl/lib")]
    # with the WSL folder first: the right library, and no "driver missing" for lack of /proc/driver
    facts, symptoms = run(root, environ, LD_LIBRARY_PATH="/usr/lib/wsl/lib")
    assert facts.gpu.libcuda.kind == "wsl"
    assert "wsl-libcuda-shadowed" not in gpu_names(symptoms)
    assert "driver-missing" not in [s.name for s in symptoms]


def test_wsl2_with_a_linux_driver_installed_inside(tmp_path, environ):
    root = gpu_machine(tmp_path, kernel=None, user_space="580.65.06", gpus=())
    libcuda(root / "usr/lib/wsl/lib", None)
    _, symptoms = run(root, environ)
    s = by_name(symptoms, "wsl-libcuda-shadowed")
    assert s.evidence["picked"] == f"/{MULTIARCH}/libcuda.so.1"


def test_cuda_compat_in_front_of_a_newer_driver_on_a_geforce(tmp_path, environ):
    root = gpu_machine(tmp_path, kernel="580.95.05", user_space="580.95.05",
                   gpus=(("0000:01:00.0", "NVIDIA GeForce RTX 4090"),))
    libcuda(root / "usr/local/cuda-13.0/compat", "580.65.06")
    facts, symptoms = run(root, environ, LD_LIBRARY_PATH="/usr/local/cuda-13.0/compat")
    assert facts.gpu.libcuda.kind == "compat"
    assert [c.path for c in facts.gpu.libcuda_copies] == [f"/{MULTIARCH}/libcuda.so.1"]
    s = by_name(symptoms, "cuda-compat-libcuda")
    assert s.severity == "error" and len(s.evidence["problems"]) == 2
    assert "libcuda-version-mismatch" not in gpu_names(symptoms)  # the compat copy is judged as compat
    assert [(a.kind, a.value) for a in plan_for(s).actions] == [("path-remove", "/usr/local/cuda-13.0/compat")]


def test_cuda_compat_on_an_older_datacenter_driver_is_a_warning(tmp_path, environ):
    root = gpu_machine(tmp_path, kernel="535.104.05", user_space="535.104.05")
    libcuda(root / "usr/local/cuda-13.0/compat", "580.65.06")
    _, symptoms = run(root, environ, LD_LIBRARY_PATH="/usr/local/cuda-13.0/compat")
    s = by_name(symptoms, "cuda-compat-libcuda")
    assert s.severity == "warning" and s.evidence["problems"] == []


def test_saved_facts_from_a_gpu_machine_diagnose_anywhere(tmp_path, environ):
    """fixdnn facts --json on the 'GPU machine' (a --root tree here), then diagnose --facts FILE."""
    root = gpu_machine(tmp_path, torch="2.14.1+cu126", archs=CU126, gpus=(("0000:01:00.0", "NVIDIA GeForce RTX 5090"),))
    saved = run_fixdnn(["--root", str(root), "--prefix", "/opt/env", "facts"], environ, how="code")
    assert saved.returncode == 0, saved.stderr
    facts_file = tmp_path / "gpu-machine.json"
    facts_file.write_text(saved.stdout)
    data = json.loads(saved.stdout)
    data = data.get("facts", data)
    assert data["gpu"]["gpus"][0]["compute_capability"] == "12.0"
    out = run_fixdnn(["--json", "--dry-run", "--offline", "--facts", str(facts_file)], environ, how="code")
    assert "FDN601" in out.stdout and "torch==2.14.1+cu130" in out.stdout, out.stdout + out.stderr
    human = run_fixdnn(["--offline", "--facts", str(facts_file)], environ, how="code")
    assert "GPU NVIDIA GeForce RTX 5090: compute capability 12.0 (by name in rules/compat/gpu.toml)" in human.stdout
    assert "torch 2.14.1+cu126 has kernels for sm_80, sm_86, sm_90" in human.stdout


# -- without --root: the Host's subprocess door ----------------------------------------------------------
def test_cudrivergetversion_probe_of_the_picked_libcuda(tmp_path, environ):
    libcuda(tmp_path / "drv", "575.57.08", 12090)
    host = Host(environ={**environ, "LD_LIBRARY_PATH": str(tmp_path / "drv")})
    env = gpu_facts.LoaderEnv(ld_library_path=(str(tmp_path / "drv"),), default_dirs=())
    g, unknowns = gpu_facts.gather(host, (), (), env, compat_mod.load().gpu)
    assert (g.libcuda.version, g.libcuda.cuda_version) == ("575.57.08", "12.9")
    assert "LD_LIBRARY_PATH" in g.libcuda.found_in
    assert unknowns == []


def test_a_hanging_libcuda_probe_is_killed_and_is_an_unknown(tmp_path, environ, monkeypatch):
    hang = "#include <unistd.h>\n__attribute__((constructor)) static void hang(void) { sleep(300); }\n"
    build_so(tmp_path / "drv/libcuda.so.1", "libcuda.so.1", c_source=hang)
    monkeypatch.setattr(gpu_facts, "PROBE_TIMEOUT", 2)
    host = Host(environ=environ)
    env = gpu_facts.LoaderEnv(ld_library_path=(str(tmp_path / "drv"),), default_dirs=())
    g, unknowns = gpu_facts.gather(host, (), (), env, compat_mod.load().gpu)
    assert g.libcuda.cuda_version is None and "timed out" in (g.libcuda.error or "")
    assert any("cuDriverGetVersion" in u.what and u.reason == "timed out" for u in unknowns)


def test_nvidia_smi_names_gpus_and_capabilities(machine, environ):
    """nvidia-smi runs through the Host: here the planted machine's /usr/local/bin/nvidia-smi (a test never
    runs the real one of the machine it is on)."""
    smi = machine.write("/usr/local/bin/nvidia-smi",
                        "#!/bin/sh\n"
                        "echo 'NVIDIA H100 80GB HBM3, 9.0, 580.65.06, 00000000:01:00.0'\n"
                        "echo 'NVIDIA GeForce RTX 5090, 12.0, 580.65.06, 00000000:02:00.0'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    host = Host(environ={**environ, "PATH": f"/usr/local/bin:{environ['PATH']}"}, system=machine.root)
    g, _ = gpu_facts.gather(host, (), (), gpu_facts.LoaderEnv(default_dirs=()), compat_mod.load().gpu)
    assert [(x.name, x.compute_capability, x.cc_source, x.driver_version) for x in g.gpus] == [
        ("NVIDIA H100 80GB HBM3", "9.0", "nvidia-smi", "580.65.06"),
        ("NVIDIA GeForce RTX 5090", "12.0", "nvidia-smi", "580.65.06")]
    assert g.sources[0] == "/usr/local/bin/nvidia-smi: 2 GPU(s)"


def test_nvml_names_gpus_when_there_is_no_nvidia_smi(tmp_path, environ):
    nvml(tmp_path / "drv", (("NVIDIA A100-SXM4-80GB", "8.0"), ("NVIDIA GeForce RTX 5090", "12.0")), "575.57.08")
    host = Host(environ=environ)
    env = gpu_facts.LoaderEnv(ld_library_path=(str(tmp_path / "drv"),), default_dirs=())
    g, unknowns = gpu_facts.gather(host, (), (), env, compat_mod.load().gpu)
    assert [(x.name, x.compute_capability, x.cc_source, x.driver_version) for x in g.gpus] == [
        ("NVIDIA A100-SXM4-80GB", "8.0", "NVML", "575.57.08"), ("NVIDIA GeForce RTX 5090", "12.0", "NVML", "575.57.08")]
    assert g.gpus[0].source == f"NVML {tmp_path / 'drv'}/libnvidia-ml.so.1"


def test_nvidia_smi_is_not_run_under_root(tmp_path, environ):
    root = machine_tree = tmp_path / "image"
    smi = machine_tree / "usr/local/bin/nvidia-smi"
    smi.parent.mkdir(parents=True)
    smi.write_text("#!/bin/sh\necho 'NVIDIA H100 80GB HBM3, 9.0, 580.65.06, 00000000:01:00.0'\n")
    smi.chmod(0o755)
    host = Host(root=root, environ={**environ, "PATH": "/usr/local/bin"})
    g, _ = gpu_facts.gather(host, (), (), gpu_facts.LoaderEnv(default_dirs=()), compat_mod.load().gpu)
    assert g.gpus == ()  # an image's tools would describe this machine, not the image's


# -- saved facts of three GPU machine shapes, committed (tests/data/gpu-facts) ------------------------------
SHAPES = {  # name: (gpu_machine arguments, the GPU verdicts its facts must give)
    "h100-sm90-torch-cu130": ({}, []),
    "rtx5090-sm120-torch-cu126": ({"torch": "2.14.1+cu126", "archs": CU126,
                                   "gpus": (("0000:01:00.0", "NVIDIA GeForce RTX 5090"),)}, ["gpu-no-kernel"]),
    "a100-sm80-ptx-only-driver-570": ({"archs": ["sm_90", "compute_75"], "kernel": "570.133.07",
                                       "user_space": "570.133.07",
                                       "gpus": (("0000:07:00.0", "NVIDIA A100-SXM4-80GB"),)}, ["gpu-ptx-only"]),
}
SHAPES_DIR = Path(__file__).resolve().parents[1] / "data" / "gpu-facts"


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_saved_facts_of_gpu_machine_shapes(shape):
    """Facts files as `fixdnn facts` wrote them (regenerate: python -m tests.e2e.test_gpu_diagnosis): they
    still load, and give the same GPU verdicts, wherever the suite runs."""
    facts = loads_json((SHAPES_DIR / f"{shape}.json").read_text(), str(SHAPES_DIR / f"{shape}.json"))
    assert gpu_names(diagnose(facts, compat_mod.load())) == SHAPES[shape][1]


def _write_shapes() -> None:
    import tempfile

    from tests.envkit.machine import Machine

    SHAPES_DIR.mkdir(parents=True, exist_ok=True)
    for name, (kwargs, _) in SHAPES.items():
        tmp = Path(tempfile.mkdtemp(prefix="gpu-shape-"))
        root = gpu_machine(tmp, **kwargs)
        home = tmp / "home"
        home.mkdir()
        environ = {"PATH": "/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
                   "FIXDNN_SYSTEM_ROOT": str(Machine(tmp / "machine").root)}
        facts = gather(Host(root=root, environ=environ), TargetSpec(prefix="/opt/env"))
        (SHAPES_DIR / f"{name}.json").write_text(dumps(facts) + "\n")


if __name__ == "__main__":
    _write_shapes()
