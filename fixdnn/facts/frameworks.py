"""Which frameworks are installed and what each needs, read statically (nothing is imported).

torch: ``torch/version.py`` and its Requires-Dist pins; TensorFlow: ``build_info.py`` parsed with
``ast`` plus the compat tables; JAX: the CUDA plugin's version and the compat tables; ONNX Runtime: the
DT_NEEDED entries of its CUDA provider and the cuDNN it loads by name; PaddlePaddle: ``paddle/version``;
CuPy: the CUDA major in its distribution name.
"""

from __future__ import annotations

import ast
import re
from dataclasses import replace

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from fixdnn.knowledge.compat import Compat
from fixdnn.facts.markers import applies, marker_env
from fixdnn.model.facts import Distribution, Framework, Need, TargetInfo, Unknown
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


def _cudnn_from_requires(dist: Distribution, env: dict[str, str], extra: str | None = None) -> Need | None:
    """A cuDNN need from an ``nvidia-cudnn-cuN`` requirement (exact pin or lower bound) whose marker holds
    in the target's marker environment ``env``."""
    for req in _requirements(dist):
        m = _CUDNN_WHEEL.match(canonicalize_name(req.name))
        if not m:
            continue
        if not applies(req.marker, env, extra=extra or ""):
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


def _torch(host: Host, dist: Distribution, compat: Compat, env: dict[str, str]) -> tuple[Framework, list[Unknown]]:
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
        cudnn = _cudnn_from_requires(dist, env)
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


def _tensorflow(host: Host, dist: Distribution, compat: Compat, env: dict[str, str]) -> tuple[Framework, list[Unknown]]:
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
        pin = _cudnn_from_requires(dist, env, extra="and-cuda")
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


def _jax(host: Host, dist: Distribution, compat: Compat, env: dict[str, str]) -> tuple[Framework, list[Unknown]]:
    m = re.search(r"cuda(\d+)", dist.name)
    cuda_major = int(m.group(1)) if m else 12
    need = _cudnn_from_requires(dist, env, extra="with-cuda")
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


def _cuda_from_file(host: Host, path: str) -> str | None:
    """``cuda_version = '12.8'`` of a generated build-info module (read, never imported)."""
    try:
        value = _assignments(host.read_text(path, limit=64 << 10)).get("cuda_version")
    except HostError:
        return None
    return value if isinstance(value, str) and value[:1].isdigit() else None


def _dlopen_cudnn(dist: Distribution, compat: Compat, env: dict[str, str], cuda: str | None, source: str,
                  extras: tuple[str, ...] = ()) -> Need | None:
    """A cuDNN the framework loads by name at run time: major and wheel from its Requires-Dist (extras
    such as onnxruntime-gpu[cudnn]) when declared, else the compat table's major for its CUDA major."""
    for extra in extras + (None,):
        req = _cudnn_from_requires(dist, env, extra=extra)
        if req is not None:
            return Need("cudnn", req.major, None, req.pin, f"{source}; {req.source}", req.wheel)
    try:
        major = compat.dlopen_cudnn.get(Version(cuda).major) if cuda else None
    except InvalidVersion:
        major = None
    return Need("cudnn", major, None, None, f"{source}; compat table: CUDA {cuda} builds use cuDNN {major}") \
        if major else None


def _onnxruntime(host: Host, dist: Distribution, compat: Compat, env: dict[str, str]) -> tuple[Framework, list[Unknown]]:
    """onnxruntime-gpu: the CUDA execution provider library is dlopen()ed when a session asks for it. Its
    DT_NEEDED names the CUDA libraries; cuDNN is either DT_NEEDED too or dlopen()ed by name from it, so
    it is found through the provider's own search path (or a copy already loaded: ``import torch`` first,
    or ``onnxruntime.preload_dlls()``, which loads ``<site>/nvidia/cudnn/lib/libcudnn.so.9`` by path)."""
    capi = f"{dist.location}/onnxruntime/capi"
    provider = f"{capi}/libonnxruntime_providers_cuda.so"
    if not host.exists(provider):
        return Framework("onnxruntime", dist.name, dist.version, False, None, (), None, "needed",
                         ("no CUDA execution provider library",)), []
    needs = list(_needs_from_elf(host, provider, "libonnxruntime_providers_cuda.so"))
    cudart = next((n for n in needs if n.library == "cudart"), None)
    cuda = _cuda_from_file(host, f"{capi}/build_and_package_info.py") or \
        _cuda_from_file(host, f"{capi}/version_info.py") or (str(cudart.major) if cudart else None)
    notes = ["onnxruntime.preload_dlls() (or importing torch first) loads the nvidia-* wheels' copies by path "
             "before the provider; without it the provider's own search path decides"]
    if not any(n.library == "cudnn" for n in needs):
        cudnn = _dlopen_cudnn(dist, compat, env, cuda, "libonnxruntime_providers_cuda.so loads libcudnn.so.N with dlopen",
                              ("cudnn", "cuda"))
        if cudnn is not None:
            needs.insert(0, cudnn)
    return Framework("onnxruntime", dist.name, dist.version, True, cuda, tuple(needs), provider, "needed",
                     tuple(notes)), []


def _paddle(host: Host, dist: Distribution, compat: Compat, env: dict[str, str]) -> tuple[Framework, list[Unknown]]:
    """paddlepaddle-gpu: ``paddle/version/__init__.py`` says the build's CUDA and cuDNN; the phi dynamic
    loader dlopen()s cuDNN when first used: by full path from ``<site>/nvidia/cudnn/lib`` for builds with
    pip CUDA libraries, then by name from its own library, then from /usr/local/cuda/lib64."""
    base = f"{dist.location}/paddle"
    try:
        values = _assignments(host.read_text(f"{base}/version/__init__.py", limit=64 << 10))
    except HostError as exc:
        return Framework("paddle", dist.name, dist.version, False, None, (), None, "dlopen"), \
            [Unknown(f"{base}/version/__init__.py", exc.reason)]
    if "with_gpu" in values:
        gpu = str(values["with_gpu"]).upper() == "ON"
    else:  # 2.x files have no with_gpu: a CPU build writes cuda_version = 'False'
        gpu = str(values.get("cuda_version", ""))[:1].isdigit()
    if not gpu:
        return Framework("paddle", dist.name, dist.version, False, None, (), None, "dlopen",
                         ("CPU build: convolutions use oneDNN, no cuDNN needed",)), []
    cuda = _cuda_from_file(host, f"{base}/version/__init__.py")
    cudnn_version = str(values.get("cudnn_version") or "")
    needs: list[Need] = []
    notes = ["Paddle only warns when the cuDNN minor is lower than its build's; another major fails"]
    if cudnn_version[:1].isdigit():
        major = int(cudnn_version.split(".")[0])
        pin = _cudnn_from_requires(dist, env)
        needs.append(Need("cudnn", major, None, pin.pin if pin else None,
                          f"paddle/version/__init__.py cudnn_version = {cudnn_version!r}", pin.wheel if pin else None))
    else:
        need = _dlopen_cudnn(dist, compat, env, cuda, "Paddle's dynamic loader dlopen()s libcudnn.so.N")
        needs += [need] if need else []
    loaded_by = _first_existing(host, [f"{base}/libs/libphi_core.so", f"{base}/libs/libphi_gpu.so",
                                       f"{base}/libs/libphi.so", f"{base}/base/libpaddle.so"])
    if str(values.get("with_pip_cuda_libraries", "")).upper() == "ON":
        notes.append("pip CUDA libraries: cuDNN is first loaded by path from nvidia/cudnn/lib beside paddle")
    return Framework("paddle", dist.name, dist.version, True, cuda, tuple(needs), loaded_by, "dlopen",
                     tuple(notes)), []


def _cupy(host: Host, dist: Distribution, compat: Compat, env: dict[str, str]) -> tuple[Framework, list[Unknown]]:
    m = re.match(r"cupy-cuda(\d+)", dist.name)
    major = int(m.group(1)[:2]) if m else None
    needs = tuple(n for n in _cuda_needs(str(major), compat, dist.name) if n.library in ("nvrtc", "cublas")) if major else ()
    return Framework("cupy", dist.name, dist.version, True, str(major) if major else None, needs, None, "dlopen",
                     _cupy_optional(host, dist)), []


def _cupy_optional(host: Host, dist: Distribution) -> tuple[str, ...]:
    """CuPy's optional libraries (cuDNN, NCCL, cuTENSOR, cuSPARSELt): each is one extension module under
    ``cupy_backends/cuda/libs`` whose DT_NEEDED names it, imported only by the feature that uses it
    (``cupy.cudnn`` ...), after ``cupy._environment`` preloads the version in ``cupy/.data/_wheel.json``.
    A missing one disables that feature, nothing else: a note, never a symptom."""
    from fixdnn.facts.elf import read_elf

    libs = f"{dist.location}/cupy_backends/cuda/libs"
    try:
        names = sorted(host.listdir(libs))
    except HostError:
        names = []
    notes = []
    for name in names:
        feature = name.split(".", 1)[0]
        if not name.endswith(".so") or feature not in ("cudnn", "nccl", "cutensor", "cusparselt"):
            continue
        wanted = [n for n in read_elf(host, f"{libs}/{name}").needed if n.lower().startswith(f"lib{feature}")]
        if wanted:
            notes.append(f"optional: cupy.{feature} needs {', '.join(wanted)} (DT_NEEDED of cupy_backends/cuda/libs/"
                         f"{name}); without it only that feature is unavailable")
    return tuple(notes) or ("cuDNN is optional for CuPy and not checked",)


def gather(host: Host, distributions: tuple[Distribution, ...], compat: Compat,
           markers: dict[str, str] | None = None) -> tuple[tuple[Framework, ...], list[Unknown]]:
    """``markers``: the target's marker environment (facts.markers.marker_env), for Requires-Dist markers."""
    env = markers if markers is not None else marker_env(TargetInfo(None, None, None, None, "files"))
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
        elif dist.name in ("onnxruntime-gpu", "onnxruntime-cuda"):
            probe = _onnxruntime
        elif dist.name in ("paddlepaddle-gpu", "paddlepaddle"):
            probe = _paddle
        elif re.match(r"^cupy-cuda\d", dist.name):
            probe = _cupy
        else:
            continue
        try:
            fw, unk = probe(host, dist, compat, env)
        except (HostError, InvalidVersion, ValueError) as exc:
            unknowns.append(Unknown(f"framework {dist.display_name} {dist.version}", str(exc)))
            continue
        frameworks.append(fw)
        unknowns.extend(unk)
    return _one_jax_per_cuda(frameworks), unknowns


def _one_jax_per_cuda(frameworks: list[Framework]) -> tuple[Framework, ...]:
    """JAX's CUDA support is two wheels, one process: jax-cudaN-plugin (the extensions, the cuDNN pin in
    its [with-cuda] extra) and jax-cudaN-pjrt (jax_plugins/xla_cudaN/xla_cuda_plugin.so, which loads
    cuDNN). Report them as one JAX: the plugin's needs, the PJRT library as the loader."""
    out: list[Framework] = []
    for fw in frameworks:
        twin = next((i for i, o in enumerate(out) if fw.name == o.name == "jax" and fw.cuda == o.cuda), None)
        if twin is None:
            out.append(fw)
            continue
        first = out[twin]
        keep, other = (first, fw) if first.distribution.endswith("-plugin") else (fw, first)
        out[twin] = replace(keep, loaded_by=keep.loaded_by or other.loaded_by,
                            notes=keep.notes + (f"one process with {other.distribution} {other.version}",))
    return tuple(out)
