"""fixdnn in-process repair: copied verbatim into the environment's site-packages as ``_fixdnn_preload.py``.

A one-line ``fixdnn-preload.pth`` imports this module and calls :func:`arm` with the sha256 of the data
file fixdnn wrote (``<sys.prefix>/etc/fixdnn/preload.json``). Arming only puts a tiny finder at the front
of ``sys.meta_path``: nothing is read and nothing beyond ``os``/``sys`` (already imported by ``site``) is
imported at interpreter start. When one of the frameworks is first imported, the finder (once per
framework) checks that the data, this file and ``etc/fixdnn/env.toml`` are exactly what fixdnn wrote,
applies the environment changes to ``os.environ`` and loads the chosen library copies by absolute path
with ``RTLD_GLOBAL``, so the framework's own ``dlopen``/``DT_NEEDED`` of that SONAME reuses them. Then it
lets the import proceed. Any problem prints one line to stderr and the import proceeds untouched.

Runs in the *target* interpreter: Python 3.8+, standard library only, no annotations evaluated at runtime.
This file is data for fixdnn (``fixdnn.shell.preload`` copies it); fixdnn itself never imports it.
"""

import os
import sys

FRAMEWORKS = ("torch", "tensorflow", "jax", "onnxruntime", "cupy", "paddle")
DATA = ("etc", "fixdnn", "preload.json")
ENV_TOML = ("etc", "fixdnn", "env.toml")


def _say(text):
    try:
        sys.stderr.write("fixdnn preload: " + text + "\n")
        sys.stderr.flush()
    except Exception:  # a closed stderr must not break the user's import either
        pass


def _sha256(path):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def _entries(value):
    return [e for e in (value or "").split(":") if e]


def apply_ops(environ, ops):
    """The same semantics as the activation scripts (fixdnn.shell.envfile.apply_ops)."""
    for op in ops:
        kind, name, value = op["op"], op["name"], op.get("value")
        if kind == "set":
            environ[name] = value
        elif kind == "unset":
            environ.pop(name, None)
        else:
            kept = [value] if kind == "path-prepend" else []
            for entry in _entries(environ.get(name)):
                if entry != value and entry not in kept:
                    kept.append(entry)
            if kept:
                environ[name] = ":".join(kept)
            else:
                environ.pop(name, None)


class _State(object):
    def __init__(self, expected):
        self.expected = expected
        self.data = None  # the checked data, once read
        self.refused = False  # a check failed: never act in this process


def _load(state):
    """The data when every file matches what fixdnn wrote; None (after one stderr line) otherwise."""
    if state.data is not None or state.refused:
        return state.data
    state.refused = True
    prefix = sys.prefix
    data_path = os.path.join(prefix, *DATA)
    try:
        if _sha256(data_path) != state.expected:
            _say(data_path + " is not the file fixdnn wrote (sha256 differs); nothing preloaded. "
                 "Run 'fixdnn apply' again or 'fixdnn rollback'")
            return None
        import json

        with open(data_path, "rb") as handle:
            data = json.loads(handle.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        _say("cannot read " + data_path + " (" + str(exc) + "); nothing preloaded")
        return None
    here = os.path.abspath(__file__)
    if here.endswith((".pyc", ".pyo")):  # pragma: no cover - fixdnn installs the source file
        here = here[:-1]
    checks = ((here, data.get("hook_sha256")), (os.path.join(prefix, *ENV_TOML), data.get("env_toml_sha256")))
    for path, want in checks:
        try:
            got = _sha256(path)
        except OSError as exc:
            got = "unreadable: " + str(exc)
        if got != want:
            _say(path + " changed since fixdnn wrote it; nothing preloaded. Run 'fixdnn apply' again "
                 "or 'fixdnn rollback'")
            return None
    state.refused = False
    state.data = data
    apply_ops(os.environ, data.get("ops", ()))
    return data


def _preload(data, framework, loaded):
    import ctypes

    for item in data.get("preload", ()):
        path = item["path"]
        wanted_by = item.get("frameworks") or FRAMEWORKS
        if framework not in wanted_by or path in loaded:
            continue
        loaded.add(path)
        try:
            st = os.stat(path)
        except OSError as exc:
            _say(path + " is gone (" + str(exc.strerror or exc) + "); not preloaded, importing " + framework +
                 " without it")
            continue
        if st.st_size != item.get("size") or st.st_mtime_ns != item.get("mtime_ns"):
            _say(path + " changed since fixdnn chose it (size or time differs); not preloaded. "
                 "Run 'fixdnn diagnose'")
            continue
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            _say("cannot load " + path + " (" + str(exc) + "); importing " + framework + " without it")


class PreloadFinder(object):
    """Never finds anything: it only acts the first time each framework's top-level name is looked up."""

    def __init__(self, expected):
        self._state = _State(expected)
        self._pending = set(FRAMEWORKS)
        self._loaded = set()

    def find_spec(self, name, path=None, target=None):
        if path is None and name in self._pending:
            self._pending.discard(name)
            if not self._pending:
                try:
                    sys.meta_path.remove(self)
                except ValueError:
                    pass
            try:
                data = _load(self._state)
                if data is not None:
                    _preload(data, name, self._loaded)
            except Exception as exc:  # report, never break the user's import
                _say("failed before importing " + name + ": " + type(exc).__name__ + ": " + str(exc))
        return None

    def invalidate_caches(self):
        pass


def arm(expected):
    """Called from the .pth line: install the finder once per process."""
    for finder in sys.meta_path:
        if type(finder).__name__ == "PreloadFinder":
            return
    sys.meta_path.insert(0, PreloadFinder(expected))
