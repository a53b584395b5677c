"""Which environment is being diagnosed, and what its interpreter says about itself.

fixdnn usually runs from its own install and inspects *another* interpreter, so nothing here reads
fixdnn's own ``sys``: a stdlib-only probe runs in the target. Without a usable interpreter (a mounted
image, a broken venv) the facts come from the files alone.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from importlib import resources

from fixdnn.model.facts import TargetInfo, Unknown
from fixdnn.target.host import Host, HostError


class TargetError(Exception):
    """The target cannot be found at all (a usage error: exit 2)."""


@dataclass(frozen=True)
class TargetSpec:
    python: str | None = None
    prefix: str | None = None


def _probe_source() -> str:
    return resources.files("fixdnn.target").joinpath("_probe.py").read_text(encoding="utf-8")


def _python_in(host: Host, prefix: str) -> str | None:
    for name in ("bin/python", "bin/python3"):
        candidate = prefix.rstrip("/") + "/" + name
        if host.exists(candidate):
            return candidate
    return None


def _looks_like_environment(host: Host, prefix: str) -> bool:
    """Whether a folder holds a Python environment at all: an empty or unrelated folder must not be
    diagnosed as a healthy one (a verdict is a claim)."""
    base = prefix.rstrip("/")
    if any(host.exists(f"{base}/{marker}") for marker in ("pyvenv.cfg", "conda-meta")):
        return True
    return _python_in(host, prefix) is not None or bool(_site_dirs_from_files(host, prefix))


def _kind_of(host: Host, prefix: str | None) -> str:
    if prefix is None:
        return "files"
    if host.exists(prefix.rstrip("/") + "/conda-meta"):
        return "conda"
    if host.exists(prefix.rstrip("/") + "/pyvenv.cfg"):
        return "venv"
    return "system"


@dataclass(frozen=True)
class Choice:
    """The environment fixdnn will look at, and why that one (said in every report)."""

    python: str | None  # None: read from files only
    prefix: str | None
    reason: str


def project_venv(host: Host, start: str) -> str | None:
    """The project's virtual environment as uv finds it: walking up from ``start``, a folder that is
    itself a venv (has ``pyvenv.cfg``: we are inside it), else its ``.venv``. A ``.venv`` without
    ``pyvenv.cfg`` stops the walk with an error, as in uv: it is not silently skipped for a parent's."""
    here = start.rstrip("/") or "/"
    while True:
        if host.is_file(f"{here.rstrip('/')}/pyvenv.cfg"):
            return here
        dot = f"{here.rstrip('/')}/.venv"
        if host.is_dir(dot):
            if not host.is_file(dot + "/pyvenv.cfg"):
                raise TargetError(f"{dot}: a .venv folder without pyvenv.cfg is not a virtual environment; "
                                  "recreate it or give --python PATH / --prefix DIR")
            return dot
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


def _cwd() -> str:
    try:
        return os.getcwd()
    except OSError:  # the user's folder was removed under them
        return "/"


def _absolute(path: str | None, here: str) -> str | None:
    """``env/bin/python`` as the user meant it, from their folder (symlinks kept: a venv's python is one)."""
    if not path or path.startswith("/"):
        return path
    return os.path.normpath(os.path.join(here, path))


def choose_target(host: Host, spec: TargetSpec, cwd: str | None = None) -> Choice:
    """Which environment: --python, --prefix, the active venv / conda env, the project's .venv (from
    ``cwd`` up), else the python3 on PATH. The interpreter may be None (files only)."""
    here = cwd if cwd is not None else _cwd()
    if host.root is None:
        # Subprocesses of the target run from a private empty folder: a relative path is the user's.
        python = spec.python if not spec.python or "/" not in spec.python else _absolute(spec.python, here)
        spec = TargetSpec(python, _absolute(spec.prefix, here))
    if spec.python:
        python = spec.python
        if "/" not in python:
            found = shutil.which(python, path=host.env("PATH", os.defpath))
            if found is None:
                raise TargetError(f"--python {python}: not found on PATH; give the interpreter's full path")
            python = found
        if not host.exists(python):
            raise TargetError(f"--python {python}: no such file; give the path of the target's interpreter")
        if not host.is_file(python):
            raise TargetError(f"--python {python}: not a file; give the path of the target's interpreter")
        return Choice(python, spec.prefix, f"--python {spec.python}")
    if spec.prefix:
        if not host.is_dir(spec.prefix):
            raise TargetError(f"--prefix {spec.prefix}: not a directory; give the environment's root folder")
        if not _looks_like_environment(host, spec.prefix):
            raise TargetError(f"--prefix {spec.prefix}: not a Python environment (no pyvenv.cfg, conda-meta, "
                              "bin/python or lib/python3*/site-packages); give the environment's root folder")
        return Choice(_python_in(host, spec.prefix) if host.root is None else None, spec.prefix,
                      f"--prefix {spec.prefix}")
    if host.root is not None:
        return Choice(None, None, f"--root {host.root}: the files of the image")
    for var, what in (("VIRTUAL_ENV", "an activated venv"), ("CONDA_PREFIX", "an activated conda environment")):
        prefix = host.env(var)
        if prefix and host.is_dir(prefix):
            return Choice(_python_in(host, prefix), prefix, f"{var} is set ({what})")
    venv = project_venv(host, here)
    if venv is not None:
        where = "the current folder" if venv in (here, f"{here.rstrip('/')}/.venv") else "a parent folder"
        return Choice(_python_in(host, venv), venv,
                      f"no environment is active; the project's virtual environment in {where} (as uv finds it)")
    found = shutil.which("python3", path=host.env("PATH", os.defpath))
    if found is None:
        raise TargetError("no active environment, no .venv here or above, and no python3 on PATH; "
                          "use --python PATH or --prefix DIR")
    return Choice(found, None, "no environment is active and no .venv here or above: the python3 on PATH")


def choose(host: Host, spec: TargetSpec) -> tuple[str | None, str | None]:
    """(interpreter, prefix) for the spec; see :func:`choose_target`."""
    got = choose_target(host, spec)
    return got.python, got.prefix


_SLOW = "did not answer within"  # the timeout reason, which discover() tells from a non-Python file


PROBE_TIMEOUT = 20.0  # seconds; FIXDNN_PROBE_TIMEOUT overrides (tests of a hanging interpreter)

# The probe's answer, checked field by field: a target that prints the wrong shape is refused, not trusted.
_FIELDS: dict[str, tuple[type, ...]] = {
    "python": (str,), "python_version": (str,), "prefix": (str,), "base_prefix": (str,), "platform": (str,),
    "machine": (str,), "site_dirs": (list,), "user_site": (str, type(None)), "user_site_enabled": (bool,),
    "sys_path": (list,), "sys_path_origins": (list,), "cwd": (str,), "has_pip": (bool,), "executes": (list,),
}
_LISTS_OF_STR = ("site_dirs", "sys_path", "sys_path_origins")


def _shape_error(data: object) -> str | None:
    if not isinstance(data, dict):
        return f"a JSON {type(data).__name__}, not an object"
    for key, types in _FIELDS.items():
        if key not in data:
            return f"no {key!r}"
        if not isinstance(data[key], types):
            return f"{key}: expected {types[0].__name__}, got {type(data[key]).__name__}"
    for key in _LISTS_OF_STR:
        if not all(isinstance(x, str) for x in data[key]):
            return f"{key}: expected a list of strings"
    if len(data["sys_path"]) != len(data["sys_path_origins"]):
        return "sys_path and sys_path_origins differ in length"
    for item in data["executes"]:
        if not (isinstance(item, dict) and isinstance(item.get("file"), str) and isinstance(item.get("line"), int)
                and isinstance(item.get("text"), str)):
            return "executes: expected objects with file, line and text"
    return None


def _timeout(host: Host) -> float:
    try:
        value = float(host.env("FIXDNN_PROBE_TIMEOUT") or PROBE_TIMEOUT)
    except ValueError:
        return PROBE_TIMEOUT
    return value if value > 0 else PROBE_TIMEOUT


def probe(host: Host, python: str, timeout: float | None = None) -> tuple[dict | None, str | None]:
    """Run the probe in the target; (data, None) or (None, reason).

    ``-I -S`` from a private empty folder: nothing of the environment runs (no .pth, no sitecustomize,
    no module of the user's folder); the probe computes the sys.path a plain ``python`` would have."""
    timeout = _timeout(host) if timeout is None else timeout
    try:
        cwd = os.getcwd()
    except OSError:  # the user's folder was removed under them
        cwd = "/"
    result = host.run([python, "-I", "-S", "-c", _probe_source(), cwd], timeout=timeout)
    if result.timed_out:
        return None, f"{_SLOW} {timeout:g} s (killed with everything it started)"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["exit status %d" % result.returncode])[-1]
        return None, f"failed: {last.strip()[:200]}"
    try:
        data = json.loads(result.stdout)
    except (ValueError, RecursionError):
        return None, "printed something that is not the probe's JSON (is it a Python 3.8+ interpreter?)"
    problem = _shape_error(data)
    if problem:
        return None, f"printed JSON of the wrong shape ({problem}); is it a Python 3.8+ interpreter?"
    return data, None


def _site_dirs_from_files(host: Host, prefix: str) -> list[str]:
    dirs = []
    for lib in ("lib", "lib64", "local/lib"):
        base = prefix.rstrip("/") + "/" + lib
        try:
            names = host.listdir(base)
        except HostError:
            continue
        for name in names:
            if name.startswith("python3"):
                for leaf in ("site-packages", "dist-packages"):
                    candidate = f"{base}/{name}/{leaf}"
                    if host.is_dir(candidate) and candidate not in dirs:
                        dirs.append(candidate)
    return dirs


def _from_files(host: Host, prefix: str | None, python: str | None, why: str | None) -> tuple[TargetInfo, list[Unknown]]:
    unknowns = []
    if why:
        unknowns.append(Unknown("target interpreter", why))
    prefixes = [prefix] if prefix else ["/usr", "/usr/local", "/opt/conda"]
    site_dirs: list[str] = []
    for p in prefixes:
        site_dirs += [d for d in _site_dirs_from_files(host, p) if d not in site_dirs]
    version = None
    if site_dirs:
        leaf = site_dirs[0].rstrip("/").split("/")[-2]  # python3.11
        version = leaf.removeprefix("python") or None
    info = TargetInfo(
        python=python,
        python_version=version,
        prefix=prefix,
        base_prefix=None,
        kind=_kind_of(host, prefix),
        site_dirs=tuple(site_dirs),
        sys_path=tuple(site_dirs),
        sys_path_origins=tuple("site" for _ in site_dirs),
        cwd=host.env("PWD") or "/",
        has_pip=any(host.exists(d + "/pip") for d in site_dirs) if site_dirs else None,
    )
    return info, unknowns


def discover(host: Host, spec: TargetSpec) -> tuple[TargetInfo, list[Unknown]]:
    got = choose_target(host, spec)
    info, unknowns = _discover(host, spec, got.python, got.prefix)
    return replace(info, chosen_because=got.reason), unknowns


def _discover(host: Host, spec: TargetSpec, python: str | None, prefix: str | None) -> tuple[TargetInfo, list[Unknown]]:
    if python is None:
        return _from_files(host, prefix, None, None if host.root else "no interpreter in the prefix")
    data, why = probe(host, python)
    if data is None and spec.python:
        # The user named this file as the interpreter: a file that cannot run the probe (a text file,
        # /bin/ls, one that hangs or prints another JSON) is a usage error, not an environment to read from
        # disk; every later step (pip, verify) would run it again. A broken venv's interpreter is read
        # with --prefix instead.
        short = why if len(why) <= 160 else why[:157] + "..."  # /bin/ls echoes the whole probe script back
        kind = "no answer from the interpreter" if why.startswith(_SLOW) else "not a Python interpreter"
        raise TargetError(f"--python {spec.python}: {kind} ({short}); give the path of the "
                          "target's python, or --prefix DIR to read a broken environment from its files")
    if data is None:
        # The environment's own interpreter does not work (its base Python gone, it hangs): the facts come
        # from the files, and nothing runs it again (python=None): pip and verify would only wait for it.
        return _from_files(host, prefix, None, f"{python} {why}")
    prefix = prefix or data["prefix"]
    info = TargetInfo(
        python=data["python"] or python,
        python_version=data["python_version"],
        prefix=prefix,
        base_prefix=data["base_prefix"],
        kind=_kind_of(host, prefix),
        platform=data["platform"],
        machine=data["machine"],
        site_dirs=tuple(data["site_dirs"]),
        user_site=data["user_site"],
        user_site_enabled=data["user_site_enabled"],
        sys_path=tuple(data["sys_path"]),
        sys_path_origins=tuple(data["sys_path_origins"]),
        cwd=data["cwd"] or "/",
        has_pip=data["has_pip"],
        startup_code=tuple(f"{e['file']}:{e['line']}: {e['text']}" if e["line"] else f"{e['file']}: {e['text']}"
                           for e in data["executes"]),
        markers=_strings(data.get("markers")),
        wheel_env=_strings(data.get("wheel_env")),
    )
    return info, []


def _strings(value) -> dict[str, str]:
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)} if isinstance(value, dict) else {}
