"""gcc-built stand-ins that *behave* like the real NVIDIA libraries (for ``fixdnn verify`` and ``run``).

Unlike ``EnvBuilder.add_cudnn_wheel`` (files with the right names and ELF layout), these act like cuDNN 9:

* the shim ``libcudnn.so.9`` exports the API and forwards every call to ``libcudnn_graph.so.9``, which it
  ``dlopen()``s by SONAME on first use from its own DT_RPATH ``$ORIGIN``. When that fails it prints the real
  message ``Invalid handle. Cannot load symbol cudnnGetVersion`` and calls ``abort()`` (SIGABRT, exit 134);
* ``cudnnGetVersion`` therefore returns the *graph* library's version (a 9.24 shim next to a 9.13 graph
  says 91300, as the real one does);
* ``cudnnCreate`` returns 1001 ``CUDNN_STATUS_NOT_INITIALIZED`` when ``libcuda.so.1`` cannot be loaded
  (no driver), and succeeds when a (stub) driver is reachable;
* each sub-library exports its version-check symbol (``cudnnCnnVersionCheck`` ...) and links its siblings
  with DT_NEEDED and DT_RUNPATH ``$ORIGIN``, so loading ``libcudnn_cnn.so.9`` by path fails when
  ``libcudnn_ops.so.9`` is missing.

``torch_package`` adds an importable stub ``torch`` whose ``__init__`` loads ``libtorch_cuda.so`` (DT_NEEDED
``libcudnn.so.9``) and whose ``conv2d`` computes a real convolution in Python.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.envkit.elfkit import build_so
from tests.envkit.env import CUDNN9_SUBS, EnvBuilder, cudnn_int

_SHIM = r"""
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
static void *graph;
static void *sym(const char *name) {
    void *f = NULL;
    if (!graph) graph = dlopen("libcudnn_graph.so.%(major)d", RTLD_NOW | RTLD_GLOBAL);
    if (graph) f = dlsym(graph, name);
    if (!f) { fprintf(stderr, "Invalid handle. Cannot load symbol %%s\n", name); fflush(stderr); abort(); }
    return f;
}
size_t cudnnGetVersion(void) { return ((size_t (*)(void))sym("cudnnGetVersion"))(); }
size_t cudnnGetCudartVersion(void) { return ((size_t (*)(void))sym("cudnnGetCudartVersion"))(); }
int cudnnGetProperty(int type, int *value) { return ((int (*)(int, int *))sym("cudnnGetProperty"))(type, value); }
int cudnnCreate(void **handle) { return ((int (*)(void **))sym("cudnnCreate"))(handle); }
int cudnnDestroy(void *handle) { return ((int (*)(void *))sym("cudnnDestroy"))(handle); }
const char *cudnnGetErrorString(int status) { return ((const char *(*)(int))sym("cudnnGetErrorString"))(status); }
"""

_GRAPH = r"""
#include <dlfcn.h>
size_t cudnnGetVersion(void) { return %(version)d; }
size_t cudnnGetCudartVersion(void) { return %(cudart)d; }
int cudnnGetProperty(int type, int *value) {
    if (type == 0) *value = %(major)d; else if (type == 1) *value = %(minor)d; else if (type == 2) *value = %(patch)d;
    else return 2000;
    return 0;
}
int cudnnCreate(void **handle) {
    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (!cuda) return 1001;  /* CUDNN_STATUS_NOT_INITIALIZED: cudaGetDeviceCount(&count) != cudaSuccess */
    int (*count)(int *) = (int (*)(int *))dlsym(cuda, "cuDeviceGetCount");
    int n = 0;
    if (!count || count(&n) != 0 || n == 0) return 1001;
    *handle = (void *)0x1;
    return 0;
}
int cudnnDestroy(void *handle) { return 0; }
const char *cudnnGetErrorString(int status) {
    switch (status) {
    case 0: return "CUDNN_STATUS_SUCCESS";
    case 1001: return "CUDNN_STATUS_NOT_INITIALIZED";
    case 2000: return "CUDNN_STATUS_BAD_PARAM";
    default: return "CUDNN_STATUS_UNKNOWN";
    }
}
int cudnnGraphVersionCheck(void) { return 0; }
"""

_LIBCUDA = r"""
int cuInit(unsigned int flags) { return 0; }
int cuDeviceGetCount(int *count) { *count = %(gpus)d; return 0; }
int cuDriverGetVersion(int *v) { *v = 13000; return 0; }
"""

# Which siblings each sub-library links (DT_NEEDED), like the real wheel's layering.
_SUB_NEEDS = {"graph": (), "ops": ("graph",), "cnn": ("ops", "graph"), "adv": ("ops", "graph"),
              "engines_precompiled": ("graph",), "engines_runtime_compiled": ("graph",), "heuristic": ("graph",)}


def _parts(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(x) for x in (version.split(".") + ["0", "0"])[:3])
    return major, minor, patch


def cudnn_shim(dest: str | os.PathLike, major: int = 9) -> Path:
    return build_so(dest, f"libcudnn.so.{major}", rpath="$ORIGIN", c_source=_SHIM % {"major": major},
                    link_args=["-ldl"])


def cudnn_sub(dest: str | os.PathLike, sub: str, version: str = "9.24.0", cuda: int = 13) -> Path:
    major, minor, patch = _parts(version)
    needed = [f"libcudnn_{n}.so.{major}" for n in _SUB_NEEDS.get(sub, ("graph",))]
    if sub == "graph":
        source = _GRAPH % {"version": cudnn_int(version), "cudart": cuda * 1000 + 30, "major": major,
                           "minor": minor, "patch": patch}
        return build_so(dest, f"libcudnn_graph.so.{major}", runpath="$ORIGIN", c_source=source, link_args=["-ldl"])
    check = "cudnn" + "".join(w.capitalize() for w in sub.split("_")) + "VersionCheck"
    return build_so(dest, f"libcudnn_{sub}.so.{major}", needed=needed, runpath="$ORIGIN",
                    c_source=f"int {check}(void) {{ return 0; }}\nint cudnn_{sub}_version(void) {{ return {cudnn_int(version)}; }}\n")


def libcuda(dest: str | os.PathLike, gpus: int = 1) -> Path:
    """A stand-in driver library: cuInit succeeds, cuDeviceGetCount reports ``gpus``."""
    return build_so(dest, "libcuda.so.1", c_source=_LIBCUDA % {"gpus": gpus})


def add_cudnn_wheel(env: EnvBuilder, version: str = "9.24.0.43", cuda: int = 13, *, location: Path | None = None,
                    skip: tuple[str, ...] = (), graph_version: str | None = None, dist: bool = True) -> Path:
    """nvidia-cudnn-cuN with a behaving shim and sub-libraries (real METADATA/RECORD). Returns the lib dir."""
    site = location or env.site
    major = _parts(version)[0]
    lib = site / "nvidia/cudnn/lib"
    files = [str(cudnn_shim(lib / f"libcudnn.so.{major}", major).relative_to(site))]
    for sub in CUDNN9_SUBS:
        if sub in skip:
            continue
        v = graph_version if (sub == "graph" and graph_version) else version
        files.append(str(cudnn_sub(lib / f"libcudnn_{sub}.so.{major}", sub, v, cuda).relative_to(site)))
    inc = site / "nvidia/cudnn/include/cudnn_version.h"
    inc.parent.mkdir(parents=True, exist_ok=True)
    mj, mn, pt = _parts(version)
    inc.write_text(f"#define CUDNN_MAJOR {mj}\n#define CUDNN_MINOR {mn}\n#define CUDNN_PATCHLEVEL {pt}\n")
    files.append("nvidia/cudnn/include/cudnn_version.h")
    if dist:
        env.add_dist(f"nvidia-cudnn-cu{cuda}", version, files, location=location)
    return lib


_TORCH_INIT = r'''
"""fixdnn test stub of torch: loads libtorch_cuda.so like the real one, computes conv2d in Python."""
import ctypes as _ctypes
import os as _os

_here = _os.path.dirname(_os.path.abspath(__file__))
_C = _ctypes.CDLL(_os.path.join(_here, "lib", "libtorch_cuda.so"), mode=_ctypes.RTLD_GLOBAL)
from torch import version  # noqa: E402
__version__ = version.__version__


class Tensor:
    def __init__(self, shape, value=1.0):
        self.shape = tuple(shape)
        self.value = float(value)

    def sum(self):
        n = 1
        for d in self.shape:
            n *= d
        return self.value * n

    def __float__(self):
        return float(self.value)


def ones(*shape, device="cpu"):
    if device != "cpu":
        raise RuntimeError("Found no NVIDIA driver on your system.")
    return Tensor(shape)


class _Functional:
    @staticmethod
    def conv2d(x, w):
        n, _c, h, wd = x.shape
        o, _ci, kh, kw = w.shape
        k = kh * kw * x.value * w.value
        return Tensor((n, o, h - kh + 1, wd - kw + 1), k)


class nn:
    functional = _Functional


class _Cudnn:
    @staticmethod
    def version():
        fn = _C.cudnnGetVersion
        fn.restype = _ctypes.c_size_t
        return int(fn())


class backends:
    cudnn = _Cudnn


class cuda:
    @staticmethod
    def is_available():
        return False

    @staticmethod
    def device_count():
        return 0
'''


def torch_package(env: EnvBuilder, version: str = "2.14.1+cu130") -> Path:
    """``env.add_torch`` with an importable ``torch`` (re-recorded so the install stays intact)."""
    env.add_torch(version)
    torch = env.site / "torch"
    (torch / "__init__.py").write_text(_TORCH_INIT)
    files = sorted(str(p.relative_to(env.site)) for p in torch.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    old = next(env.site.glob("torch-*.dist-info"))
    requires = [ln.split(": ", 1)[1] for ln in (old / "METADATA").read_text().splitlines()
                if ln.startswith("Requires-Dist: ")]
    env.add_dist("torch", version, files, requires=requires)
    return torch


def torch_env(env: EnvBuilder, **cudnn) -> EnvBuilder:
    """A healthy torch 2.14.1+cu130 venv whose cuDNN behaves like the real one."""
    torch_package(env)
    add_cudnn_wheel(env, **cudnn)
    env.add_cuda_wheels(13)
    return env
