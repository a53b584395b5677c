# Runs inside the *target* interpreter (Python 3.8+), in a subprocess of fixdnn, from the user's directory
# (sys.path[0] is the cwd, as in `python -c`): stdlib only apart from the framework under test. Each step is
# announced on stdout as one flushed JSON line before it runs, so an abort (SIGABRT from a broken cuDNN)
# still tells which step died.
#
#   python -c "<this file>" FRAMEWORK        FRAMEWORK: torch | tensorflow | jax | onnxruntime
import traceback  # json, os, sys and the helpers come from _prelude.py


def error_text(exc):
    lines = traceback.format_exception_only(type(exc), exc)
    return "".join(lines).strip()[-4000:]


def step(name, fn):
    emit({"step": name})
    try:
        value = fn()
    except BaseException as exc:  # SystemExit from a framework's import counts too
        emit({"step": name, "ok": False, "error": error_text(exc)})
        return False, None
    emit({"step": name, "ok": True, "value": value})
    return True, value


def probe_torch():
    ok, torch = step("import", lambda: __import__("torch") and None)
    if not ok:
        return
    import torch

    info = {"version": torch.__version__, "cuda": getattr(torch.version, "cuda", None)}
    emit({"step": "info", "ok": True, "value": info})

    def cpu_conv():
        x = torch.ones(1, 1, 5, 5)
        w = torch.ones(1, 1, 3, 3)
        y = torch.nn.functional.conv2d(x, w)
        return float(y.sum())

    step("conv2d-cpu", cpu_conv)
    if info["cuda"]:
        step("cudnn-version", lambda: torch.backends.cudnn.version())
        ok, gpus = step("gpu-count", lambda: torch.cuda.device_count() if torch.cuda.is_available() else 0)
        if ok and gpus:
            def gpu_conv():
                x = torch.ones(1, 1, 5, 5, device="cuda")
                w = torch.ones(1, 1, 3, 3, device="cuda")
                return float(torch.nn.functional.conv2d(x, w).sum().cpu())

            step("conv2d-gpu", gpu_conv)


def probe_tensorflow():
    ok, _ = step("import", lambda: __import__("tensorflow") and None)
    if not ok:
        return
    import tensorflow as tf

    build = {}
    try:
        build = dict(tf.sysconfig.get_build_info())
    except Exception:
        pass
    emit({"step": "info", "ok": True, "value": {"version": tf.__version__, "cuda": build.get("cuda_version"),
                                                 "cudnn": build.get("cudnn_version")}})

    def conv(device):
        with tf.device(device):
            x = tf.ones((1, 5, 5, 1))
            w = tf.ones((3, 3, 1, 1))
            return float(tf.reduce_sum(tf.nn.conv2d(x, w, strides=1, padding="VALID")).numpy())

    step("conv2d-cpu", lambda: conv("/CPU:0"))
    ok, gpus = step("gpu-count", lambda: len(tf.config.list_physical_devices("GPU")))
    if ok and gpus:
        step("conv2d-gpu", lambda: conv("/GPU:0"))


def probe_jax():
    ok, _ = step("import", lambda: __import__("jax") and None)
    if not ok:
        return
    import jax

    emit({"step": "info", "ok": True, "value": {"version": jax.__version__}})

    def conv(device):
        import jax.numpy as jnp

        x = jax.device_put(jnp.ones((1, 1, 5, 5)), device)
        w = jax.device_put(jnp.ones((1, 1, 3, 3)), device)
        return float(jax.lax.conv(x, w, (1, 1), "VALID").sum())

    step("conv2d-cpu", lambda: conv(jax.devices("cpu")[0]))
    ok, gpus = step("gpu-count", lambda: len([d for d in jax.devices() if d.platform == "gpu"]))
    if ok and gpus:
        step("conv2d-gpu", lambda: conv([d for d in jax.devices() if d.platform == "gpu"][0]))


def probe_onnxruntime():
    ok, _ = step("import", lambda: __import__("onnxruntime") and None)
    if not ok:
        return
    import onnxruntime

    emit({"step": "info", "ok": True, "value": {"version": onnxruntime.__version__,
                                                 "providers": list(onnxruntime.get_available_providers())}})


def main():
    name = sys.argv[1]
    probe = {"torch": probe_torch, "tensorflow": probe_tensorflow, "jax": probe_jax,
             "onnxruntime": probe_onnxruntime}.get(name)
    if probe is None:
        emit({"step": "import", "ok": False, "error": "no probe for framework %r" % name})
    else:
        probe()
    files = mapped_files()
    emit({"step": "maps", "ok": files is not None, "files": files or [], "runtimes": runtimes(files)})
    emit({"done": True})


main()
