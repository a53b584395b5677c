"""Synthetic deep-learning environments on disk, from real files.

Start from a healthy environment and break exactly one thing per test::

    env = EnvBuilder(tmp_path / "venv")            # a real venv (python -m venv --without-pip)
    env.torch_cuda13()                             # torch 2.14.1+cu130 stub, its cuDNN and CUDA wheels
    (env.cudnn_lib / "libcudnn_cnn.so.9").unlink()  # ... the one thing broken

Distributions get real METADATA / RECORD (sha256, size) / INSTALLER; libraries are gcc-built ELF files
with the real SONAMEs, DT_NEEDED and DT_RPATH / DT_RUNPATH layouts of the real wheels.
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

from tests.envkit.elfkit import build_so

CUDNN9_SUBS = ("graph", "ops", "cnn", "adv", "engines_precompiled", "engines_runtime_compiled", "heuristic")
CUDNN8_SUBS = ("ops_infer", "ops_train", "cnn_infer", "cnn_train", "adv_infer", "adv_train")


def cudnn_int(version: str) -> int:
    major, minor, patch = (int(x) for x in (version.split(".") + ["0", "0"])[:3])
    return major * 10000 + minor * 100 + patch if major >= 9 else major * 1000 + minor * 100 + patch


def record_line(rel: str, path: Path) -> str:
    data = path.read_bytes()
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{rel},sha256={digest},{len(data)}"


_SITE_IN_VENV: list[str] = []


def _site_in_venv(python: Path) -> str:
    """Where a venv of this interpreter keeps its site-packages, relative to the venv: asked of the first
    venv's own interpreter (the layout is the interpreter's, patched by some distributions), then reused."""
    if not _SITE_IN_VENV:
        code = "import os, sys, sysconfig; print(os.path.relpath(sysconfig.get_paths()['purelib'], sys.prefix))"
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
        _SITE_IN_VENV.append(out.stdout.strip())
    return _SITE_IN_VENV[0]


class EnvBuilder:
    def __init__(self, prefix: str | os.PathLike, *, real_python: bool = True, conda: bool = False,
                 python_version: str | None = None):
        self.prefix = Path(prefix)
        self.real_python = real_python
        if real_python:
            venv.EnvBuilder(with_pip=False, symlinks=True).create(self.prefix)
            self.python = self.prefix / "bin" / "python"
            self.site = self.prefix / _site_in_venv(self.python)
            assert self.site.is_dir(), f"venv made no {self.site}"
        else:
            ver = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
            self.python = None
            self.site = self.prefix / "lib" / f"python{ver}" / "site-packages"
            self.site.mkdir(parents=True, exist_ok=True)
            if not conda:
                (self.prefix / "pyvenv.cfg").write_text(f"home = /usr/bin\nversion = {ver}\n")
        if conda:
            (self.prefix / "conda-meta").mkdir(parents=True, exist_ok=True)
            (self.prefix / "conda-meta" / "history").write_text("")

    # -- distributions -----------------------------------------------------------------------------
    def add_dist(self, name: str, version: str, files: list[str] = (), *, requires: list[str] = (),
                 installer: str = "pip", location: Path | None = None) -> Path:
        """Write NAME-VERSION.dist-info listing ``files`` (paths relative to the site dir, already on disk)."""
        site = location or self.site
        folder = site / f"{name.replace('-', '_')}-{version}.dist-info"
        folder.mkdir(parents=True, exist_ok=True)
        meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        meta += [f"Requires-Dist: {r}" for r in requires]
        (folder / "METADATA").write_text("\n".join(meta) + "\n\nA stub distribution built by fixdnn's test kit.\n")
        (folder / "INSTALLER").write_text(installer + "\n")
        (folder / "WHEEL").write_text("Wheel-Version: 1.0\nGenerator: fixdnn-envkit\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        lines = [record_line(rel, site / rel) for rel in files if (site / rel).is_file()]
        rel_meta = folder.relative_to(site)
        for leaf in ("METADATA", "INSTALLER", "WHEEL"):
            lines.append(record_line(f"{rel_meta}/{leaf}", folder / leaf))
        lines.append(f"{rel_meta}/RECORD,,")
        (folder / "RECORD").write_text("\n".join(lines) + "\n")
        return folder

    def _lib(self, rel: str, soname: str | None, site: Path, **kw) -> str:
        build_so(site / rel, soname, **kw)
        return rel

    # -- cuDNN and CUDA wheels ---------------------------------------------------------------------
    def add_cudnn_wheel(self, version: str = "9.24.0.43", cuda: int = 13, *, location: Path | None = None,
                        skip: tuple[str, ...] = (), header: bool = True, dist: bool = True) -> Path:
        """nvidia-cudnn-cuN: the shim and every sub-library in nvidia/cudnn/lib, like the real wheel."""
        site = location or self.site
        major = int(version.split(".")[0])
        value = cudnn_int(version)
        subs = CUDNN9_SUBS if major >= 9 else CUDNN8_SUBS
        files = [self._lib(f"nvidia/cudnn/lib/libcudnn.so.{major}", f"libcudnn.so.{major}", site,
                           rpath="$ORIGIN", functions={"cudnnGetVersion": value, "cudnnGetCudartVersion": cuda * 1000})]
        for sub in subs:
            if sub in skip:
                continue
            files.append(self._lib(f"nvidia/cudnn/lib/libcudnn_{sub}.so.{major}", f"libcudnn_{sub}.so.{major}", site,
                                   runpath="$ORIGIN", functions={f"cudnn_{sub}_version": value}))
        if header:
            inc = site / "nvidia/cudnn/include/cudnn_version.h"
            inc.parent.mkdir(parents=True, exist_ok=True)
            mj, mn, pt = (version.split(".") + ["0", "0"])[:3]
            inc.write_text(f"#define CUDNN_MAJOR {mj}\n#define CUDNN_MINOR {mn}\n#define CUDNN_PATCHLEVEL {pt}\n")
            files.append("nvidia/cudnn/include/cudnn_version.h")
        if dist:
            self.add_dist(f"nvidia-cudnn-cu{cuda}", version, files, location=location)
        return site / "nvidia/cudnn/lib"

    def add_cuda_wheels(self, cuda: int = 13, version: str = "13.0.96", *, location: Path | None = None,
                        skip: tuple[str, ...] = ()) -> Path:
        """CUDA runtime, cuBLAS(Lt) and NVRTC. CUDA 13 wheels share nvidia/cu13/lib; 12 has one dir each."""
        site = location or self.site
        libs = {"cudart": "cuda_runtime", "cublas": "cublas", "cublasLt": "cublas", "nvrtc": "cuda_nvrtc"}
        files = []
        for fam, folder in libs.items():
            if fam in skip:
                continue
            sub = f"cu{cuda}" if cuda >= 13 else folder
            files.append(self._lib(f"nvidia/{sub}/lib/lib{fam}.so.{cuda}", f"lib{fam}.so.{cuda}", site,
                                   functions={f"{fam}_stub_version": cuda * 1000}))
        name = "nvidia-cuda-runtime" if cuda >= 13 else f"nvidia-cuda-runtime-cu{cuda}"
        self.add_dist(name, version, files, location=location)
        return site / (f"nvidia/cu{cuda}/lib" if cuda >= 13 else "nvidia/cuda_runtime/lib")

    # -- frameworks --------------------------------------------------------------------------------
    def add_torch(self, version: str = "2.14.1+cu130", cuda: str | None = "13.0",
                  requires: list[str] | None = None) -> Path:
        lib = "torch/lib"
        major = cuda.split(".")[0] if cuda else None
        (self.site / "torch").mkdir(parents=True, exist_ok=True)
        (self.site / "torch/__init__.py").write_text("raise ImportError('fixdnn test stub: never import')\n")
        (self.site / "torch/version.py").write_text(
            "from typing import Optional\n\n"  # the real file uses annotated assignments
            f"__version__ = {version!r}\ndebug = False\ncuda: Optional[str] = {cuda!r}\ngit_version = 'stub'\n")
        files = ["torch/__init__.py", "torch/version.py"]
        if cuda:
            rpath = "$ORIGIN/../../nvidia/cudnn/lib:$ORIGIN/../../nvidia/cu13/lib:$ORIGIN" if major == "13" else \
                "$ORIGIN/../../nvidia/cudnn/lib:$ORIGIN/../../nvidia/cuda_runtime/lib:$ORIGIN/../../nvidia/cublas/lib:$ORIGIN"
            files.append(self._lib(f"{lib}/libtorch_cuda.so", "libtorch_cuda.so", self.site,
                                   needed=["libcudnn.so.9", f"libcudart.so.{major}", f"libcublas.so.{major}",
                                           f"libcublasLt.so.{major}", f"libnvrtc.so.{major}"],
                                   rpath=rpath))
        files.append(self._lib(f"{lib}/libtorch_cpu.so", "libtorch_cpu.so", self.site, rpath="$ORIGIN"))
        if requires is None:
            requires = ['nvidia-cudnn-cu13==9.24.0.43; platform_system == "Linux"',
                        'cuda-toolkit[cublas,cudart,nvrtc]==13.0.3; platform_system == "Linux"'] if cuda else []
        self.add_dist("torch", version.split("+")[0] if "+" not in version else version, files, requires=requires)
        return self.site / lib

    def torch_cuda13(self, cudnn: str = "9.24.0.43") -> "EnvBuilder":
        """A healthy torch 2.14.1+cu130 environment: torch, nvidia-cudnn-cu13 and the CUDA 13 wheels."""
        self.add_torch()
        self.add_cudnn_wheel(cudnn, 13)
        self.add_cuda_wheels(13)
        return self

    def add_tensorflow(self, version: str = "2.20.0", cuda: str | None = "12.5.1", cudnn_major: int = 9,
                       requires: list[str] | None = None) -> Path:
        tf = self.site / "tensorflow"
        (tf / "python/platform").mkdir(parents=True, exist_ok=True)
        (tf / "__init__.py").write_text("raise ImportError('fixdnn test stub: never import')\n")
        pairs = [("cpu_compiler", "clang 18"), ("cuda_version", cuda or ""), ("cudnn_version", str(cudnn_major) if cuda else ""),
                 ("is_cuda_build", bool(cuda)), ("is_rocm_build", False), ("is_tensorrt_build", False)]
        (tf / "python/platform/build_info.py").write_text(
            "# Generated by tensorflow/tools/build_info/gen_build_info.py\nimport collections\n"
            f"build_info = collections.OrderedDict({pairs!r})\n")
        runpath = ":".join(f"$ORIGIN/../nvidia/{d}/lib" for d in ("cudnn", "cublas", "cuda_runtime", "cuda_nvrtc"))
        files = ["tensorflow/__init__.py", "tensorflow/python/platform/build_info.py",
                 self._lib("tensorflow/libtensorflow_framework.so.2", "libtensorflow_framework.so.2", self.site,
                           runpath=runpath)]
        if requires is None:
            requires = ['nvidia-cudnn-cu12<10.0,>=9.3.0.75; extra == "and-cuda"',
                        'nvidia-cuda-runtime-cu12<13.0,>=12.5.82; extra == "and-cuda"']
        self.add_dist("tensorflow", version, files, requires=requires)
        return tf

    def tensorflow_cuda12(self, cudnn: str = "9.3.0.75") -> "EnvBuilder":
        self.add_tensorflow()
        self.add_cudnn_wheel(cudnn, 12)
        self.add_cuda_wheels(12, "12.5.82")
        return self

    def add_jax_plugin(self, version: str = "0.7.2", cuda: int = 12) -> Path:
        folder = self.site / f"jax_plugins/xla_cuda{cuda}"
        files = [self._lib(f"jax_plugins/xla_cuda{cuda}/xla_cuda_plugin.so", "xla_cuda_plugin.so", self.site)]
        self.add_dist(f"jax-cuda{cuda}-plugin", version, files,
                      requires=[f'nvidia-cudnn-cu{cuda}<10,>=9.8; extra == "with-cuda"'])
        return folder

    @property
    def cudnn_lib(self) -> Path:
        return self.site / "nvidia/cudnn/lib"


def stray_cudnn(directory: Path, version: str) -> Path:
    """A tarball-style cuDNN (libcudnn.so.X.Y.Z + soname links + include/cudnn_version.h) in ``directory``."""
    major = version.split(".")[0]
    lib = directory / "lib"
    lib.mkdir(parents=True, exist_ok=True)
    value = cudnn_int(version)
    subs = CUDNN9_SUBS if int(major) >= 9 else CUDNN8_SUBS
    for name in ("",) + tuple(f"_{s}" for s in subs):
        real = lib / f"libcudnn{name}.so.{version}"
        build_so(real, f"libcudnn{name}.so.{major}", rpath="$ORIGIN" if not name else None,
                 functions={"cudnnGetVersion": value} if not name else {f"cudnn{name}_version": value})
        (lib / f"libcudnn{name}.so.{major}").symlink_to(real.name)
    inc = directory / "include"
    inc.mkdir(parents=True, exist_ok=True)
    mj, mn, pt = (version.split(".") + ["0", "0"])[:3]
    (inc / "cudnn_version.h").write_text(f"#define CUDNN_MAJOR {mj}\n#define CUDNN_MINOR {mn}\n#define CUDNN_PATCHLEVEL {pt}\n")
    return lib
