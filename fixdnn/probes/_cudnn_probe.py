# Runs inside the *target* interpreter (Python 3.8+), in a subprocess of fixdnn: stdlib only, no walrus,
# no f-string '='. A broken cuDNN aborts the process (SIGABRT), so every step is announced on stdout as one
# JSON line, flushed, before it runs: the runner knows which step killed the process.
#
#   python -I -c "<this file>" CONFIG_JSON
#   CONFIG_JSON = {"library": "/path/libcudnn.so.9", "subs": ["/path/libcudnn_graph.so.9", ...], "create": true}
import ctypes  # json, os, sys and the helpers come from _prelude.py

STATUS = {  # cuDNN 9, from cudnn_graph.h (9.24)
    0: "CUDNN_STATUS_SUCCESS", 1001: "CUDNN_STATUS_NOT_INITIALIZED",
    1002: "CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH", 1003: "CUDNN_STATUS_SERIALIZATION_VERSION_MISMATCH",
    1004: "CUDNN_STATUS_DEPRECATED", 1005: "CUDNN_STATUS_LICENSE_ERROR", 1006: "CUDNN_STATUS_RUNTIME_IN_PROGRESS",
    1007: "CUDNN_STATUS_RUNTIME_FP_OVERFLOW", 1008: "CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED",
    2000: "CUDNN_STATUS_BAD_PARAM", 3000: "CUDNN_STATUS_NOT_SUPPORTED",
    3005: "CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDA_DRIVER", 3006: "CUDNN_STATUS_NOT_SUPPORTED_INCOMPATIBLE_CUDART",
    3007: "CUDNN_STATUS_NOT_SUPPORTED_ARCH_MISMATCH", 3008: "CUDNN_STATUS_NOT_SUPPORTED_RUNTIME_PREREQUISITE_MISSING",
    3009: "CUDNN_STATUS_NOT_SUPPORTED_SUBLIBRARY_UNAVAILABLE", 4000: "CUDNN_STATUS_INTERNAL_ERROR",
    5000: "CUDNN_STATUS_EXECUTION_FAILED",
}
STATUS8 = {
    0: "CUDNN_STATUS_SUCCESS", 1: "CUDNN_STATUS_NOT_INITIALIZED", 2: "CUDNN_STATUS_ALLOC_FAILED",
    3: "CUDNN_STATUS_BAD_PARAM", 4: "CUDNN_STATUS_INTERNAL_ERROR", 5: "CUDNN_STATUS_INVALID_VALUE",
    6: "CUDNN_STATUS_ARCH_MISMATCH", 7: "CUDNN_STATUS_MAPPING_ERROR", 8: "CUDNN_STATUS_EXECUTION_FAILED",
    9: "CUDNN_STATUS_NOT_SUPPORTED", 10: "CUDNN_STATUS_LICENSE_ERROR",
    11: "CUDNN_STATUS_RUNTIME_PREREQUISITE_MISSING", 12: "CUDNN_STATUS_RUNTIME_IN_PROGRESS",
    13: "CUDNN_STATUS_RUNTIME_FP_OVERFLOW", 14: "CUDNN_STATUS_VERSION_MISMATCH",
}
def describe(status, lib):
    name = None
    try:
        fn = lib.cudnnGetErrorString
        fn.restype = ctypes.c_char_p
        fn.argtypes = [ctypes.c_int]
        raw = fn(status)
        name = raw.decode("utf-8", "replace") if raw else None
    except Exception:
        name = None
    return name or STATUS.get(status) or STATUS8.get(status) or "status %d" % status


def driver_state():
    """Is there a driver and a GPU? (libcuda.so.1 loadable, cuInit, cuDeviceGetCount)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        return {"driver": False, "gpus": 0, "detail": str(exc)}
    try:
        rc = cuda.cuInit(0)
        if rc != 0:
            return {"driver": True, "gpus": 0, "detail": "cuInit returned %d" % rc}
        count = ctypes.c_int(0)
        rc = cuda.cuDeviceGetCount(ctypes.byref(count))
        return {"driver": True, "gpus": int(count.value) if rc == 0 else 0, "detail": "cuDeviceGetCount returned %d" % rc}
    except Exception as exc:
        return {"driver": True, "gpus": 0, "detail": str(exc)}


def main():
    cfg = json.loads(sys.argv[1])
    path = cfg["library"]
    emit({"step": "load", "path": path})
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        emit({"step": "load", "ok": False, "error": str(exc)})
        emit({"step": "maps", "ok": True, "files": mapped_files(), "runtimes": runtimes(mapped_files())})
        emit({"done": True})
        return
    emit({"step": "load", "ok": True})

    for name in ("cudnnGetVersion", "cudnnGetCudartVersion"):
        emit({"step": name})
        try:
            fn = getattr(lib, name)
        except AttributeError:
            emit({"step": name, "ok": False, "error": "symbol not exported"})
            continue
        fn.restype = ctypes.c_size_t
        fn.argtypes = []
        emit({"step": name, "ok": True, "value": int(fn())})

    emit({"step": "cudnnGetProperty"})
    try:
        fn = lib.cudnnGetProperty
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
        parts = []
        for kind in (0, 1, 2):  # MAJOR_VERSION, MINOR_VERSION, PATCH_LEVEL
            value = ctypes.c_int(-1)
            status = fn(kind, ctypes.byref(value))
            if status != 0:
                raise RuntimeError(describe(status, lib))
            parts.append(value.value)
        emit({"step": "cudnnGetProperty", "ok": True, "value": "%d.%d.%d" % tuple(parts)})
    except AttributeError:
        emit({"step": "cudnnGetProperty", "ok": False, "error": "symbol not exported"})
    except RuntimeError as exc:
        emit({"step": "cudnnGetProperty", "ok": False, "error": str(exc)})

    for sub in cfg.get("subs", ()):
        emit({"step": "load-sub", "path": sub})
        try:
            ctypes.CDLL(sub)
            emit({"step": "load-sub", "path": sub, "ok": True})
        except OSError as exc:
            emit({"step": "load-sub", "path": sub, "ok": False, "error": str(exc)})

    if cfg.get("create", True):
        emit({"step": "cudnnCreate"})
        try:
            fn = lib.cudnnCreate
        except AttributeError:
            emit({"step": "cudnnCreate", "ok": False, "error": "symbol not exported"})
        else:
            fn.restype = ctypes.c_int
            handle = ctypes.c_void_p()
            status = fn(ctypes.byref(handle))
            result = {"step": "cudnnCreate", "ok": status == 0, "status": status, "name": describe(status, lib)}
            if status == 0:
                try:
                    lib.cudnnDestroy(handle)
                except Exception:
                    pass
            else:
                result.update(driver_state())
            emit(result)

    files = mapped_files()
    emit({"step": "maps", "ok": files is not None, "files": files or [], "runtimes": runtimes(files)})
    emit({"done": True})


main()
