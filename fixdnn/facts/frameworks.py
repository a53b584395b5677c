"""Which frameworks are installed and what each needs, read statically (nothing is imported).

torch: ``torch/version.py`` and its Requires-Dist pins; TensorFlow: ``build_info.py`` parsed with
``ast`` plus the compat tables; JAX: the CUDA plugin's version and the compat tables; ONNX Runtime: the
DT_NEEDED entries of its CUDA provider; CuPy: the CUDA major in its distribution name.
"""

from __future__ import annotations

import ast
import re

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from fixdnn.knowledge.compat import Compat
from fixdnn.model.facts import Distribution, Framework, Need, Unknown
from fixdnn.target.host import Host, HostError

_CUDNN_WHEEL = re.compile(r"^nvidia-cudnn-cu(\d+)$")
_CUDA_LIBS = ("cudart", "cublas", "cublasLt", "nvrtc")


def _requirements(dist: Distribution) -> list[Requirement]:
    out = []
    for line in dist.requires:
        try:
            out.append(Requirement(line))
        except InvalidRequirement:
            continue
    return out


def _mm(version: str) -> str:
    """'9.24.0.43' -> '9.24'."""
    v = Version(version)
    return f"{v.major}.{v.minor}"


def _cudnn_from_requires(dist: Distribution, extra: str | None = None) -> Need | None:
    """A cuDNN need from an ``nvidia-cudnn-cuN`` requirement (exact pin or lower bound)."""
    for req in _requirements(dist):
        m = _CUDNN_WHEEL.match(canonicalize_name(req.name))
        if not m:
            continue
        if req.marker is not None:
            env = {"extra": extra or ""}
            try:
                if not req.marker.evaluate(env):
                    continue
            except Exception:
                continue
        pins = [s for s in req.specifier if s.operator in ("==", "===")]
        lows = [s for s in req.specifier if s.operator in (">=", "~=")]
        try:
            if pins:
                version = pins[0].version
                return Need("cudnn", Version(version).major, _mm(version), f"{canonicalize_name(req.name)}=={version}",
                            f"{dist.display_name} {dist.version} Requires-Dist", canonicalize_name(req.name))
            if lows:
                version = lows[0].version
                return Need("cudnn", Version(version).major, _mm(version), None,
                            f"{dist.display_name} {dist.version} Requires-Dist {req.name}{req.specifier}",
                            canonicalize_name(req.name))
        except InvalidVersion:
            continue
    return None


def _cuda_needs(cuda: str, compat: Compat, source: str) -> tuple[Need, ...]:
    try:
        major = Version(cuda).major
    except InvalidVersion:
        return ()
    libs = compat.cuda_libs.get(major)
    if not libs:
        return ()
    return tuple(Need(fam, libs[fam], None, None, source) for fam in _CUDA_LIBS if fam in libs)


def _assignments(text: str) -> dict[str, object]:
    """Top-level ``NAME = <literal>`` assignments of a Python file, without executing it."""
    out: dict[str, object] = {}
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return out
    for node in tree.body:
        # torch/version.py uses annotated assignments: ``cuda: Optional[str] = '13.0'``
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            target, value = node.targets[0].id, node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            target, value = node.target.id, node.value
        else:
            continue
        if isinstance(value, ast.Call) and value.args:  # build_info = OrderedDict([...])
            value = value.args[0]
        try:
            out[target] = ast.literal_eval(value)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue
    return out


def _first_existing(host: Host, paths: list[str]) -> str | None:
    for p in paths:
        if host.exists(p):
            return p
    return None


def _torch(host: Host, dist: Distribution, compat: Compat) -> tuple[Framework, list[Unknown]]:
    base = f"{dist.location}/torch"
    unknowns = []
    cuda = None
    version = dist.version
    try:
        values = _assignments(host.read_text(f"{base}/version.py", limit=64 << 10))
        cuda = values.get("cuda") if isinstance(values.get("cuda"), str) else None
        version = str(values.get("__version__") or version)
    except HostError as exc:
        unknowns.append(Unknown(f"{base}/version.py", exc.reason))
        local = Version(version).local if _valid(version) else None
        if local and local.startswith("cu") and local[2:].isdigit():
            digits = local[2:]
            cuda = f"{digits[:-1]}.{digits[-1]}"
    needs: list[Need] = []
    if cuda:
        cudnn = _cudnn_from_requires(dist)
        if cudnn is None:
            wheel = compat.torch_wheel(version)
            if wheel is not None and wheel.cuda.major == Version(cuda).major:
                pin_version = wheel.cudnn_pin.split("==", 1)[1]
                cudnn = Need("cudnn", Version(pin_version).major, _mm(pin_version), wheel.cudnn_pin,
                             f"compat table torch {wheel.version}", wheel.cudnn_pin.split("==", 1)[0])
        if cudnn is not None:
            needs.append(cudnn)
        needs.extend(_cuda_needs(cuda, compat, f"torch/version.py cuda = {cuda!r}"))
    lib = f"{base}/lib"
    loaded_by = _first_existing(host, [f"{lib}/libtorch_cuda.so", f"{lib}/libtorch_python.so"])
    notes = () if cuda else ("CPU build: convolutions use the bundled oneDNN, no cuDNN needed",)
    return Framework("torch", dist.name, version, bool(cuda), cuda, tuple(needs), loaded_by, "needed", notes), unknowns


def _valid(version: str) -> bool:
    try:
        Version(version)
        return True
    except InvalidVersion:
        return False


def _tensorflow(host: Host, dist: Distribution, compat: Compat) -> tuple[Framework, list[Unknown]]:
    base = f"{dist.location}/tensorflow"
    unknowns = []
    info: dict = {}
    try:
        values = _assignments(host.read_text(f"{base}/python/platform/build_info.py", limit=256 << 10))
        raw = values.get("build_info")
        if isinstance(raw, list):
            info = {k: v for k, v in raw if isinstance(k, str)}
        elif isinstance(raw, dict):
            info = raw
    except HostError as exc:
        unknowns.append(Unknown(f"{base}/python/platform/build_info.py", exc.reason))
    gpu = bool(info.get("is_cuda_build"))
    cuda = str(info["cuda_version"]) if gpu and info.get("cuda_version") else None
    needs: list[Need] = []
    notes: list[str] = []
    if gpu:
        build = compat.tf_build(dist.version)
        pin = _cudnn_from_requires(dist, extra="and-cuda")
        major = None
        try:
            major = int(str(info.get("cudnn_version", "")).split(".")[0])
        except ValueError:
            pass
        if build is not None and (major is None or build.cudnn.major == major):
            needs.append(Need("cudnn", build.cudnn.major, f"{build.cudnn.major}.{build.cudnn.minor}",
                              pin.pin if pin else None, f"compat table tensorflow {build.version}",
                              pin.wheel if pin else None))
        elif major is not None:
            needs.append(Need("cudnn", major, None, pin.pin if pin else None, "build_info.py cudnn_version"))
            notes.append(f"TensorFlow {dist.version} is not in the compat tables: minimum cuDNN minor unknown")
        if cuda:
            needs.extend(n for n in _cuda_needs(cuda, compat, f"build_info.py cuda_version = {cuda!r}")
                         if n.library != "nvrtc")
    else:
        notes.append("CPU build: convolutions use oneDNN, no cuDNN needed")
    loaded_by = None
    try:
        for name in host.listdir(base):
            if name.startswith("libtensorflow_framework.so"):
                loaded_by = f"{base}/{name}"
                break
    except HostError as exc:
        unknowns.append(Unknown(base, exc.reason))
    return Framework("tensorflow", dist.name, dist.version, gpu, cuda, tuple(needs), loaded_by, "dlopen",
                     tuple(notes)), unknowns


def _jax(host: Host, dist: Distribution, compat: Compat) -> tuple[Framework, list[Unknown]]:
    m = re.search(r"cuda(\d+)", dist.name)
    cuda_major = int(m.group(1)) if m else 12
    need = _cudnn_from_requires(dist, extra="with-cuda")
    minimum = compat.jax_minimum(dist.version, cuda_major)
    if minimum is not None and (need is None or Version(need.minimum or "0") < minimum.cudnn):
        need = Need("cudnn", minimum.cudnn.major, f"{minimum.cudnn.major}.{minimum.cudnn.minor}",
                    None, f"compat table jax {minimum.since}+ (CUDA {minimum.cuda_major})")
    needs = [need] if need else [Need("cudnn", 9, None, None, f"{dist.name} (CUDA {cuda_major})")]
    needs.extend(_cuda_needs(str(cuda_major), compat, dist.name))
    loaded_by = None
    plugin_dir = f"{dist.location}/jax_plugins"
    for sub in host.glob_dirs(plugin_dir):
        try:
            for name in host.listdir(sub):
                if name.endswith(".so"):
                    loaded_by = f"{sub}/{name}"
                    break
        except HostError:
            continue
        if loaded_by:
            break
    return Framework("jax", dist.name, dist.version, True, str(cuda_major), tuple(needs), loaded_by,
                     "python-preload"), []


def _needs_from_elf(host: Host, path: str, source: str) -> tuple[Need, ...]:
    from fixdnn.facts.elf import read_elf

    info = read_elf(host, path)
    needs = []
    for soname in info.needed:
        m = re.match(r"^lib(cudnn|cudart|cublasLt|cublas|nvrtc)\.so\.(\d+)$", soname)
        if m:
            needs.append(Need(m.group(1), int(m.group(2)), None, None, f"{source} DT_NEEDED {soname}"))
    return tuple(needs)


def _onnxruntime(host: Host, dist: Distribution, compat: Compat) -> tuple[Framework, list[Unknown]]:
    provider = f"{dist.location}/onnxruntime/capi/libonnxruntime_providers_cuda.so"
    if not host.exists(provider):
        return Framework("onnxruntime", dist.name, dist.version, False, None, (), None, "needed",
                         ("no CUDA execution provider library",)), []
    needs = _needs_from_elf(host, provider, "libonnxruntime_providers_cuda.so")
    cudart = next((n for n in needs if n.library == "cudart"), None)
    return Framework("onnxruntime", dist.name, dist.version, True, str(cudart.major) if cudart else None,
                     needs, provider, "needed"), []


def _cupy(host: Host, dist: Distribution, compat: Compat) -> tuple[Framework, list[Unknown]]:
    m = re.match(r"cupy-cuda(\d+)", dist.name)
    major = int(m.group(1)[:2]) if m else None
    needs = tuple(n for n in _cuda_needs(str(major), compat, dist.name) if n.library in ("nvrtc", "cublas")) if major else ()
    return Framework("cupy", dist.name, dist.version, True, str(major) if major else None, needs, None, "dlopen",
                     ("cuDNN is optional for CuPy and not checked",)), []


def gather(host: Host, distributions: tuple[Distribution, ...], compat: Compat) -> tuple[tuple[Framework, ...], list[Unknown]]:
    frameworks: list[Framework] = []
    unknowns: list[Unknown] = []
    tf_names = set(compat.tf_distributions)
    jax_plugins = set(compat.jax_plugins)
    for dist in distributions:
        if dist.name == "torch":
            probe = _torch
        elif dist.name in tf_names:
            probe = _tensorflow
        elif dist.name in jax_plugins:
            probe = _jax
        elif dist.name == "onnxruntime-gpu":
            probe = _onnxruntime
        elif re.match(r"^cupy-cuda\d", dist.name):
            probe = _cupy
        else:
            continue
        try:
            fw, unk = probe(host, dist, compat)
        except (HostError, InvalidVersion, ValueError) as exc:
            unknowns.append(Unknown(f"framework {dist.display_name} {dist.version}", str(exc)))
            continue
        frameworks.append(fw)
        unknowns.extend(unk)
    return tuple(frameworks), unknowns
