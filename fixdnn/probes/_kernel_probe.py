# Runs inside the *target* interpreter (Python 3.8+) with the target's own jupyter_client: starts the kernel
# of one kernelspec exactly as Jupyter does (its argv and its env), imports each framework in it and reports
# what loaded. json, os, sys and emit() come from _prelude.py.
#
#   python -c "<this file>" '{"kernel_dir": ".../kernels/NAME", "frameworks": ["torch"], "timeout": 60}'
CODE = r'''
import json as _fx_json, os as _fx_os
_fx_out = {"LD_LIBRARY_PATH": _fx_os.environ.get("LD_LIBRARY_PATH"), "frameworks": {}}
for _fx_name in %(frameworks)r:
    _fx_r = _fx_out["frameworks"][_fx_name] = {}
    try:
        _fx_mod = __import__(_fx_name)
        _fx_r["import"] = True
        if _fx_name == "torch":
            try:
                _fx_r["cudnn"] = _fx_mod.backends.cudnn.version()
            except Exception as _fx_e:
                _fx_r["cudnn_error"] = type(_fx_e).__name__ + ": " + str(_fx_e)
    except BaseException as _fx_e:
        _fx_r["import"] = False
        _fx_r["error"] = type(_fx_e).__name__ + ": " + str(_fx_e)
print("FIXDNN-KERNEL " + _fx_json.dumps(_fx_out))
'''


def main():
    cfg = json.loads(sys.argv[1])
    emit({"step": "jupyter_client"})
    try:
        from jupyter_client.kernelspec import KernelSpecManager
        from jupyter_client.manager import KernelManager
    except Exception as exc:
        emit({"step": "jupyter_client", "ok": False, "error": type(exc).__name__ + ": " + str(exc)})
        return
    emit({"step": "jupyter_client", "ok": True})
    kernel_dir = cfg["kernel_dir"]
    ksm = KernelSpecManager(kernel_dirs=[os.path.dirname(kernel_dir)])
    km = KernelManager(kernel_name=os.path.basename(kernel_dir), kernel_spec_manager=ksm)
    emit({"step": "start"})
    try:
        km.start_kernel()
    except Exception as exc:
        emit({"step": "start", "ok": False, "error": type(exc).__name__ + ": " + str(exc)})
        return
    kc = km.client()
    try:
        kc.start_channels()
        kc.wait_for_ready(timeout=cfg.get("timeout", 60))
        emit({"step": "start", "ok": True})
        chunks, errors = [], []

        def hook(msg):
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                chunks.append(content.get("text", ""))
            elif kind == "error":
                errors.append(content.get("ename", "") + ": " + content.get("evalue", ""))

        emit({"step": "execute"})
        reply = kc.execute_interactive(CODE % {"frameworks": cfg["frameworks"]}, timeout=cfg.get("timeout", 60),
                                       output_hook=hook)
        result = None
        for line in "".join(chunks).splitlines():
            if line.startswith("FIXDNN-KERNEL "):
                result = json.loads(line[len("FIXDNN-KERNEL "):])
        ok = reply["content"].get("status") == "ok" and result is not None
        emit({"step": "execute", "ok": ok, "value": result, "error": "; ".join(errors) or None,
              "output": "".join(chunks)[-4000:]})
    except Exception as exc:  # a kernel that died (a broken cuDNN aborts it) or hung
        alive = km.is_alive()
        emit({"step": "execute", "ok": False, "error": type(exc).__name__ + ": " + str(exc)
              + ("" if alive else " (the kernel died)")})
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    emit({"done": True})


main()
