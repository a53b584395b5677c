"""ONNX Runtime and PaddlePaddle laid out like their real wheels (files that matter for loading only):
gcc-built libraries with the real names and DT_NEEDED, the generated build-info modules, real dist-info."""

from __future__ import annotations

from tests.envkit.env import EnvBuilder


def add_onnxruntime_gpu(env: EnvBuilder, version: str = "1.31.0", cuda: int = 12, *,
                        cudnn_needed: bool = False) -> str:
    """onnxruntime-gpu: capi/onnxruntime_pybind11_state.so and the CUDA provider, whose DT_NEEDED names the
    CUDA libraries (and libcudnn.so.9 only when ``cudnn_needed``); extras [cuda,cudnn] pull the wheels."""
    capi = "onnxruntime/capi"
    needed = [f"libcublasLt.so.{cuda}", f"libcublas.so.{cuda}", f"libcudart.so.{cuda}"]
    if cudnn_needed:
        needed.insert(0, "libcudnn.so.9")
    (env.site / capi).mkdir(parents=True, exist_ok=True)
    (env.site / "onnxruntime/__init__.py").write_text("raise ImportError('fixdnn test stub: never import')\n")
    (env.site / capi / "build_and_package_info.py").write_text(
        f"package_name = 'onnxruntime-gpu'\n__version__ = {version!r}\ncuda_version = '{cuda}.8'\n")
    files = ["onnxruntime/__init__.py", f"{capi}/build_and_package_info.py",
             env._lib(f"{capi}/onnxruntime_pybind11_state.so", None, env.site, rpath="$ORIGIN"),
             env._lib(f"{capi}/libonnxruntime_providers_shared.so", "libonnxruntime_providers_shared.so", env.site),
             env._lib(f"{capi}/libonnxruntime_providers_cuda.so", "libonnxruntime_providers_cuda.so", env.site,
                      needed=needed + ["libonnxruntime_providers_shared.so"])]
    env.add_dist("onnxruntime-gpu", version, files,
                 requires=[f'nvidia-cudnn-cu{cuda}~=9.0; extra == "cudnn"',
                           f'nvidia-cuda-runtime-cu{cuda}~={cuda}.0; extra == "cuda"'])
    return str(env.site / capi / "libonnxruntime_providers_cuda.so")


def add_paddle_gpu(env: EnvBuilder, version: str = "3.3.1", *, cuda: str = "12.6", cudnn: str = "9.5.1",
                   pip_libraries: bool = True, with_gpu_line: bool = True, with_gpu: bool = True) -> str:
    """paddlepaddle-gpu: paddle/version/__init__.py (generated, plain assignments) and the phi libraries
    whose dynamic loader dlopen()s cuDNN. ``with_gpu_line=False``: the 2.x layout, which has no
    ``with_gpu`` (a CPU build says ``cuda_version = 'False'``); ``with_gpu=False``: a 3.x CPU build."""
    (env.site / "paddle/version").mkdir(parents=True, exist_ok=True)
    (env.site / "paddle/__init__.py").write_text("raise ImportError('fixdnn test stub: never import')\n")
    (env.site / "paddle/version/__init__.py").write_text(
        f"# THIS FILE IS GENERATED FROM PADDLEPADDLE SETUP.PY\nfull_version = {version!r}\n"
        f"cuda_version = {cuda!r}\ncudnn_version = {cudnn!r}\n" + (f"with_gpu = {'ON' if with_gpu else 'OFF'!r}\n" if with_gpu_line else "") +
        (f"with_pip_cuda_libraries = {'ON' if pip_libraries else 'OFF'!r}\n" if with_gpu_line else ""))
    files = ["paddle/__init__.py", "paddle/version/__init__.py",
             env._lib("paddle/libs/libphi_core.so", "libphi_core.so", env.site, rpath="$ORIGIN"),
             env._lib("paddle/base/libpaddle.so", "libpaddle.so", env.site, needed=["libphi_core.so"],
                      rpath="$ORIGIN/../libs")]
    env.add_dist("paddlepaddle-gpu", version, files,
                 requires=['nvidia-cudnn-cu12==9.5.1.17; platform_system == "Linux"'] if pip_libraries else [])
    return str(env.site / "paddle/libs/libphi_core.so")
