"""CPU-side builders: stub OpenMP runtimes that behave like Intel's at start-up, MKL and intel-openmp wheels,
framework libraries that link them, and conda-meta records.

The stub Intel/LLVM runtime does what ``__kmp_register_library_startup`` does, reduced to its visible effect:
a constructor looks for ``__KMP_REGISTERED_LIB_<pid>`` in the environment; when another copy set it and
``KMP_DUPLICATE_LIB_OK`` is not true it prints ``OMP: Error #15`` and calls ``abort()``; otherwise it sets it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from tests.envkit.elfkit import build_so

_KMP_SOURCE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ctype.h>
#include <unistd.h>
static const char *fixdnn_self = "%(name)s";
/* __kmp_str_match: data matches target when their common prefix has >= len chars (len 0: whole word). */
static int match(const char *target, int len, const char *data) {
    int i;
    if (!data) return 0;
    for (i = 0; target[i] && data[i]; ++i)
        if (tolower((unsigned char)target[i]) != tolower((unsigned char)data[i])) return 0;
    return len > 0 ? i >= len : (!target[i] && !data[i]);
}
static int kmp_true(const char *d) {
    return match("true", 1, d) || match("on", 2, d) || match("1", 1, d) || match(".true.", 2, d) ||
           match(".t.", 2, d) || match("yes", 1, d) || match("enabled", 0, d);
}
__attribute__((constructor)) static void fixdnn_kmp_register(void) {
    char var[64];
    snprintf(var, sizeof var, "__KMP_REGISTERED_LIB_%%d", (int)getpid());
    const char *other = getenv(var);
    if (other && *other) {
        if (!kmp_true(getenv("KMP_DUPLICATE_LIB_OK"))) {
            fprintf(stderr, "OMP: Error #15: Initializing %%s, but found %%s already initialized.\n", fixdnn_self, other);
            fprintf(stderr, "OMP: Hint This means that multiple copies of the OpenMP runtime have been linked into the program.\n");
            fflush(stderr);
            abort();
        }
        return;
    }
    setenv(var, fixdnn_self, 1);
}
int omp_get_max_threads(void) { return 1; }
"""

_GOMP_SOURCE = "int omp_get_max_threads(void) { return 1; }\nint GOMP_parallel(void) { return 0; }\n"


def omp_runtime(dest: Path, soname: str | None = None, *, registers: bool | None = None) -> Path:
    """A stub OpenMP runtime at ``dest``. libiomp5 / libomp register themselves (abort on a second copy)."""
    name = Path(dest).name
    soname = soname or name
    if registers is None:
        registers = not name.startswith("libgomp")
    source = (_KMP_SOURCE % {"name": soname}) if registers else _GOMP_SOURCE
    return build_so(dest, soname, c_source=source)


def consumer(dest: Path, soname: str, needed: list[str], *, rpath: str | None = None,
             runpath: str | None = None, functions: dict[str, int] | None = None) -> Path:
    """A framework library / extension module whose DT_NEEDED names the runtimes."""
    return build_so(dest, soname, needed=needed, rpath=rpath, runpath=runpath,
                    functions=functions or {f"fixdnn_{soname.split('.')[0]}_marker": 1})


def prefix_lib(env) -> Path:
    """Where pip puts wheel data files such as intel-openmp's libiomp5.so: <prefix>/lib == site/../../../lib."""
    return (env.site / "../../../lib").resolve()


def add_intel_openmp_wheel(env, version: str = "2024.2.1") -> Path:
    lib = prefix_lib(env)
    omp_runtime(lib / "libiomp5.so")
    env.add_dist("intel-openmp", version, ["../../../lib/libiomp5.so"])
    return lib / "libiomp5.so"


MKL_PARTS = ("rt", "core", "intel_lp64", "intel_thread", "gnu_thread", "sequential", "def", "avx2", "avx512")


def add_mkl_wheel(env, version: str = "2024.2.0", major: int = 2, *, skip: tuple[str, ...] = (),
                  exports_ijit: bool = False) -> Path:
    """The mkl wheel's data files in <prefix>/lib; the Intel threading layer needs libiomp5.so."""
    lib = prefix_lib(env)
    files = []
    for part in MKL_PARTS:
        if part in skip:
            continue
        soname = f"libmkl_{part}.so.{major}"
        needed = {"intel_thread": ["libiomp5.so"], "gnu_thread": ["libgomp.so.1"]}.get(part, [])
        funcs = {f"mkl_{part}_stub": 1}
        if exports_ijit and part in ("rt", "core"):
            funcs["iJIT_NotifyEvent"] = 0
        build_so(lib / soname, soname, needed=needed, runpath="$ORIGIN", functions=funcs)
        files.append(f"../../../lib/{soname}")
    env.add_dist("mkl", version, files, requires=["intel-openmp==2024.*", "tbb==2021.*"])
    return lib


def torch_cpu_gomp(env, version: str = "2.14.1+cpu") -> Path:
    """A CPU torch wheel: libtorch_cpu.so needs the bundled torch/lib/libgomp.so.1 (DT_RPATH $ORIGIN)."""
    lib = env.site / "torch/lib"
    omp_runtime(lib / "libgomp.so.1", registers=False)
    consumer(lib / "libtorch_cpu.so", "libtorch_cpu.so", ["libgomp.so.1"], rpath="$ORIGIN")
    (env.site / "torch").mkdir(parents=True, exist_ok=True)
    (env.site / "torch/__init__.py").write_text("raise ImportError('fixdnn test stub: never import')\n")
    (env.site / "torch/version.py").write_text(f"__version__ = {version!r}\ndebug = False\ncuda = None\n")
    env.add_dist("torch", version, ["torch/__init__.py", "torch/version.py", "torch/lib/libgomp.so.1",
                                    "torch/lib/libtorch_cpu.so"])
    return lib


def torch_cpu_iomp(env, version: str = "2.14.1+cpu") -> Path:
    """A torch build linked to Intel OpenMP, with its own copy in torch/lib (the macOS / conda shape)."""
    lib = env.site / "torch/lib"
    omp_runtime(lib / "libiomp5.so")
    consumer(lib / "libtorch_cpu.so", "libtorch_cpu.so", ["libiomp5.so"], rpath="$ORIGIN")
    (env.site / "torch").mkdir(parents=True, exist_ok=True)
    (env.site / "torch/__init__.py").write_text("raise ImportError('fixdnn test stub: never import')\n")
    (env.site / "torch/version.py").write_text(f"__version__ = {version!r}\ndebug = False\ncuda = None\n")
    env.add_dist("torch", version, ["torch/__init__.py", "torch/version.py", "torch/lib/libiomp5.so",
                                    "torch/lib/libtorch_cpu.so"])
    return lib / "libtorch_cpu.so"


def numpy_vendored_iomp(env, hash8: str = "3b1a9c2e", version: str = "2.3.0") -> Path:
    """numpy with an auditwheel-vendored Intel OpenMP (renamed SONAME) in numpy.libs."""
    vendored = f"libiomp5-{hash8}.so"
    omp_runtime(env.site / "numpy.libs" / vendored, vendored)
    ext = consumer(env.site / "numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so",
                   "_multiarray_umath.so", [vendored], rpath="$ORIGIN/../../numpy.libs")
    (env.site / "numpy/__init__.py").write_text("raise ImportError('fixdnn test stub: never import')\n")
    env.add_dist("numpy", version, ["numpy/__init__.py", f"numpy.libs/{vendored}",
                                    "numpy/_core/" + ext.name])
    return ext


def numpy_linked_iomp(env, rpath: str = "$ORIGIN/../../../..", version: str = "2.3.0") -> Path:
    """numpy whose extension needs plain libiomp5.so, found through DT_RPATH (e.g. <prefix>/lib)."""
    ext = consumer(env.site / "numpy/_core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so",
                   "_multiarray_umath.so", ["libiomp5.so"], rpath=rpath)
    (env.site / "numpy/__init__.py").write_text("raise ImportError('fixdnn test stub: never import')\n")
    env.add_dist("numpy", version, ["numpy/__init__.py", "numpy/_core/" + ext.name])
    return ext


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def conda_record(prefix: Path, name: str, version: str, build: str, channel: str = "conda-forge",
                 files: list[str] = (), *, build_number: int = 0, paths_data: bool = True,
                 subdir: str = "linux-64") -> Path:
    """Write conda-meta/<name>-<version>-<build>.json the way conda does (files, paths_data with sha256)."""
    meta = Path(prefix) / "conda-meta"
    meta.mkdir(parents=True, exist_ok=True)
    record = {
        "name": name, "version": version, "build": build, "build_number": build_number,
        "channel": f"pkgs/{channel}/{subdir}" if channel == "main" else f"{channel}/{subdir}",
        "subdir": subdir, "fn": f"{name}-{version}-{build}.conda", "depends": [],
        "files": list(files), "license": "proprietary", "requested_spec": name,
    }
    if paths_data:
        paths = []
        for rel in files:
            full = Path(prefix) / rel
            item = {"_path": rel, "path_type": "softlink" if full.is_symlink() else "hardlink"}
            if full.is_file():
                item["sha256"] = sha256_file(full)
                item["size_in_bytes"] = full.stat().st_size
            paths.append(item)
        record["paths_data"] = {"paths": paths, "paths_version": 1}
    out = meta / f"{name}-{version}-{build}.json"
    out.write_text(json.dumps(record, indent=2))
    return out
