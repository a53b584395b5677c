# Shared by fixdnn's probe scripts: fixdnn.probes.script() puts this in front of each probe's own text,
# and the result runs inside the *target* interpreter (Python 3.8+): stdlib only, no walrus.
import json
import os
import sys

# Libraries that bring an OpenMP runtime or a BLAS into a process (name prefix -> (api, vendor)).
RUNTIMES = (
    ("libiomp5", "openmp", "intel"), ("libgomp", "openmp", "gnu"), ("libomp", "openmp", "llvm"),
    ("libmkl_", "blas", "mkl"), ("libopenblas", "blas", "openblas"), ("libscipy_openblas", "blas", "openblas"),
    ("libblis", "blas", "blis"), ("libflexiblas", "blas", "flexiblas"), ("libcblas", "blas", "cblas"),
    ("libblas", "blas", "reference"), ("libdnnl", "dnn", "onednn"), ("libmkldnn", "dnn", "onednn"),
)


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def mapped_files():
    """Every file-backed mapping of this process, in first-mapped order (realpaths, deduplicated)."""
    seen = []
    try:
        with open("/proc/self/maps") as fh:
            for line in fh:
                parts = line.split(None, 5)
                if len(parts) == 6:
                    path = parts[5].strip()
                    if path.startswith("/") and ".so" in os.path.basename(path) and path not in seen:
                        seen.append(path)
    except OSError:
        return None
    return seen


def runtimes(files):
    out = []
    for path in files or ():
        base = os.path.basename(path)
        for prefix, api, vendor in RUNTIMES:
            if base.startswith(prefix) and (prefix != "libomp" or base.startswith(("libomp.", "libomp-"))):
                out.append({"path": path, "api": api, "vendor": vendor, "source": "/proc/self/maps"})
                break
    try:
        import threadpoolctl
    except Exception:
        return out
    try:
        for info in threadpoolctl.threadpool_info():
            out.append({"path": info.get("filepath"), "api": info.get("user_api"),
                        "vendor": info.get("internal_api"), "prefix": info.get("prefix"),
                        "version": info.get("version"), "num_threads": info.get("num_threads"),
                        "source": "threadpoolctl"})
    except Exception as exc:
        out.append({"path": None, "api": "error", "vendor": str(exc), "source": "threadpoolctl"})
    return out
