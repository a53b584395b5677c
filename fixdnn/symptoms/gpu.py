"""GPU symptoms: kernels compiled for other GPUs, PTX-only builds, and the user-space driver (libcuda.so.1)
missing, of another version than the kernel module, shadowed on WSL2, or replaced by cuda-compat."""

from __future__ import annotations

import posixpath

from packaging.version import InvalidVersion, Version

from fixdnn.knowledge.gpu import cc_number, coverage
from fixdnn.model.facts import Facts, FrameworkKernels, Gpu
from fixdnn.symptoms.registry import check


def _ver(text: str | None) -> Version | None:
    try:
        return Version(text) if text else None
    except InvalidVersion:
        return None


def _cuda_tuple(text: str | None) -> tuple[int, ...] | None:
    v = _ver(text)
    return (v.major, v.minor) if v else None


def _gpus_by_cc(facts: Facts) -> dict[str, list[Gpu]]:
    out: dict[str, list[Gpu]] = {}
    for g in facts.gpu.gpus if facts.gpu else ():
        if g.compute_capability:
            out.setdefault(g.compute_capability, []).append(g)
    return out


def _known_kernels(facts: Facts) -> list[FrameworkKernels]:
    """Frameworks whose fat binaries were read (a build with no readable kernels gets no verdict here)."""
    return [k for k in (facts.gpu.kernels if facts.gpu else ()) if any(lib.entries for lib in k.libraries)]


def _sm(cc: str) -> str:
    return f"sm_{cc_number(cc)}"


def _driver_cuda(facts: Facts, tables) -> tuple[str | None, str | None]:
    """(newest CUDA the driver supports, where that comes from)."""
    lib = facts.gpu.libcuda if facts.gpu else None
    if lib is not None and lib.cuda_version:
        return lib.cuda_version, f"cuDriverGetVersion of {lib.path}"
    driver = facts.driver.version if facts.driver else None
    if driver and tables is not None:
        cuda = tables.cuda_of_driver(driver)
        if cuda:
            return cuda, f"driver {driver} (rules/compat/gpu.toml)"
    return None, None


def _fix(kernels: FrameworkKernels, cc: str, compat, driver: str | None = None) -> dict | None:
    """The torch variant of the installed release that has machine code for ``cc``: the newest CUDA the
    driver runs, else the newest (the driver then needs an upgrade too, which driver-too-old says)."""
    tables = compat.gpu
    if kernels.framework != "torch" or tables is None:
        return None
    release = _ver(kernels.version)
    if release is None:
        return None
    public = release.public
    have = _ver(driver)
    fits = []
    for build in sorted(tables.torch_builds, key=lambda b: _cuda_tuple(b.cuda) or (), reverse=True):
        if public not in build.releases or coverage(build.sass, build.ptx, cc) != "sass":
            continue
        minimum = tables.driver_for_cuda(build.cuda) or ""
        fits.append(({"pin": f"torch=={public}+{build.local}", "cuda": build.cuda, "local": build.local,
                      "sass": list(build.sass), "archs": ", ".join(build.sass + build.ptx),
                      "driver_minimum": minimum}, have is None or not minimum or have >= Version(minimum)))
    return next((f for f, runs in fits if runs), fits[0][0] if fits else None)


def _lists(kernels: FrameworkKernels) -> str:
    parts = list(kernels.sass) + [f"{p} (PTX)" for p in kernels.ptx]
    return ", ".join(parts) or "nothing"


@check("FDN601", "gpu-no-kernel", "error", "The framework build has no kernel for this GPU")
def gpu_no_kernel(facts: Facts, compat):
    """The framework's CUDA libraries carry machine code (SASS) only for other GPU architectures and no PTX
    the driver could compile for this one. The first CUDA operation fails with ``CUDA error: no kernel
    image is available for execution on the device`` (torch also warns ``sm_120 is not compatible with
    the current PyTorch installation``). Machine code for sm_XY runs on GPUs of the same major with a minor
    >= Y (sm_80 runs on 8.6, not on 9.0); PTX for compute_XY is compiled for any GPU >= X.Y. The
    architectures are read from the ``.nv_fatbin`` sections of the framework's own libraries, without a
    GPU. The fix is a build of the framework that has this GPU's architecture."""
    for kernels in _known_kernels(facts):
        for cc, gpus in _gpus_by_cc(facts).items():
            if coverage(kernels.sass, kernels.ptx, cc) != "none":
                continue
            names = sorted({g.name or "an NVIDIA GPU" for g in gpus})
            fix = _fix(kernels, cc, compat, _kernel_driver(facts))
            evidence = {"framework": kernels.framework, "version": kernels.version, "gpu": names[0],
                        "gpus": names, "cc": cc, "sm": _sm(cc), "sass": list(kernels.sass),
                        "ptx": list(kernels.ptx), "archs": _lists(kernels), "partial": list(kernels.partial), "libraries": [lib.path for lib in kernels.libraries if lib.entries],
                        "fix": fix or {}}
            yield gpu_no_kernel.spec.make(
                f"{kernels.framework} {kernels.version} has no kernel for {names[0]} ({_sm(cc)}): "
                f"it carries {_lists(kernels)}",
                evidence,
                chain=(f"{names[0]}: compute capability {cc} ({gpus[0].cc_source or gpus[0].source})",
                       *(f"{lib.path}: {', '.join(lib.sass + lib.ptx) or 'no kernels'}"
                         for lib in kernels.libraries if lib.entries),
                       f"no SASS for {cc_number(cc) // 10}.x at or below {cc}, no PTX at or below {_sm(cc)}"
                       + (f" (only a few kernels: {', '.join(kernels.partial)})" if kernels.partial else "")),
                hint=(f"install {fix['pin']} (CUDA {fix['cuda']}: {', '.join(fix['sass'])})" if fix else
                      f"install a {kernels.framework} build compiled for {_sm(cc)}"))


@check("FDN602", "gpu-ptx-only", "warning", "The GPU runs the framework only through a PTX JIT")
def gpu_ptx_only(facts: Facts, compat):
    """The framework has no machine code for this GPU, only PTX: the driver compiles it on first use (a
    slow first run, minutes for a big framework, cached in ``~/.nv/ComputeCache``). The driver must know
    the PTX ISA version the build was made with (PTX ISA 9.0 needs a driver of CUDA 13.0, >= 580.65.06);
    minor-version compatibility does not cover PTX. With an older driver this is an error: the JIT fails
    with ``CUDA_ERROR_UNSUPPORTED_PTX_VERSION`` / "the provided PTX was compiled with an unsupported
    toolchain"."""
    tables = compat.gpu
    for kernels in _known_kernels(facts):
        for cc, gpus in _gpus_by_cc(facts).items():
            if coverage(kernels.sass, kernels.ptx, cc) != "ptx":
                continue
            names = sorted({g.name or "an NVIDIA GPU" for g in gpus})
            needs = tables.cuda_for_ptx(kernels.ptx_isa) if tables else None
            minimum = tables.driver_for_cuda(needs) if tables and needs else None
            have, have_source = _driver_cuda(facts, tables)
            too_old = bool(needs and have and _cuda_tuple(have) < _cuda_tuple(needs))
            evidence = {"framework": kernels.framework, "version": kernels.version, "gpu": names[0], "cc": cc,
                        "sm": _sm(cc), "ptx": list(kernels.ptx), "ptx_isa": kernels.ptx_isa or "",
                        "cuda_needed": needs or "", "driver_minimum": minimum or "",
                        "driver_cuda": have or "", "driver": facts.driver.version if facts.driver else "",
                        "too_old": too_old}
            fix = _fix(kernels, cc, compat, _kernel_driver(facts))
            evidence["fix"] = fix or {}
            chain = [f"{names[0]}: compute capability {cc}",
                     f"{kernels.framework}: SASS {', '.join(kernels.sass) or 'none'}; PTX {', '.join(kernels.ptx)}"
                     f" (ISA {kernels.ptx_isa or '?'})"]
            if needs:
                chain.append(f"PTX ISA {kernels.ptx_isa} needs a driver of CUDA {needs} (>= {minimum or '?'})")
            chain.append(f"the driver supports CUDA {have} ({have_source})" if have else
                         "the driver's CUDA version is unknown")
            if too_old:
                summary = (f"{kernels.framework} {kernels.version} has only PTX for {names[0]} ({_sm(cc)}) and the "
                           f"driver (CUDA {have}) cannot compile PTX ISA {kernels.ptx_isa}: it needs >= {minimum}")
                hint = f"upgrade the NVIDIA driver to {minimum} or newer" + (f", or install {fix['pin']}" if fix else "")
            else:
                summary = (f"{kernels.framework} {kernels.version} has no machine code for {names[0]} ({_sm(cc)}): "
                           f"it runs by compiling PTX on first use (slow start)")
                hint = f"install {fix['pin']} for machine code" if fix else "expect a slow first run; nothing breaks"
            yield gpu_ptx_only.spec.make(summary, evidence, chain=chain, hint=hint,
                                         severity="error" if too_old else None)


def _kernel_driver(facts: Facts) -> str | None:
    return facts.driver.version if facts.driver else None


def _gpu_frameworks(facts: Facts) -> list[str]:
    return [fw.name for fw in facts.frameworks if fw.gpu_build]


@check("FDN603", "libcuda-version-mismatch", "error", "libcuda.so.1 is of another version than the kernel module")
def libcuda_version_mismatch(facts: Facts, compat):
    """The user-space driver library the loader picks (``libcuda.so.<version>``) is not the version of the
    loaded NVIDIA kernel module. CUDA refuses to start (``cuInit`` error 803, "system has unsupported
    display driver / cuda driver combination"; nvidia-smi says "Driver/library version mismatch"). Usual
    causes: a driver upgrade without a reboot, or a container image that ships its own driver libraries
    instead of getting the host's from the NVIDIA container runtime."""
    lib = facts.gpu.libcuda if facts.gpu else None
    kernel = _kernel_driver(facts)
    if lib is None or lib.kind != "driver" or not lib.version or not kernel or lib.version == kernel:
        return
    yield libcuda_version_mismatch.spec.make(
        f"{lib.path} is driver {lib.version} but the kernel module is {kernel}",
        {"libcuda": lib.path, "realpath": lib.realpath, "user_space": lib.version, "kernel": kernel,
         "container": facts.gpu.container or ""},
        chain=(f"{facts.driver.source}: kernel module {kernel}",
               f"{lib.path} → {lib.realpath} ({lib.version_source}; {lib.found_in})"),
        hint=("remove the driver libraries from the image and start it with the NVIDIA runtime (--gpus all)"
              if facts.gpu.container else "reboot to load the installed driver's kernel module, or reinstall one driver version"))


@check("FDN604", "libcuda-missing", "error", "The NVIDIA kernel module is loaded but no libcuda.so.1 is reachable")
def libcuda_missing(facts: Facts, compat):
    """The kernel has the NVIDIA driver loaded, yet no ``libcuda.so.1`` is on the loader's path, so every CUDA
    program reports no GPU ("Found no NVIDIA driver on your system", ``cudaErrorInsufficientDriver``).
    The typical case is a container started without the NVIDIA runtime: ``/proc/driver/nvidia`` is the
    host's, but the driver's user-space libraries are mounted only by the NVIDIA Container Toolkit
    (``docker run --gpus all``, ``--runtime=nvidia``, CDI ``--device nvidia.com/gpu=all``). On a host, the
    driver's user-space package (``libnvidia-compute-<branch>``) is missing."""
    gpu = facts.gpu
    if gpu is None or facts.driver is None or gpu.libcuda is not None or gpu.wsl:
        return
    fws = _gpu_frameworks(facts)
    yield libcuda_missing.spec.make(
        f"the NVIDIA kernel module {facts.driver.version} is loaded but libcuda.so.1 cannot be found"
        + (" (in a container)" if gpu.container else ""),
        {"driver": facts.driver.version or "", "container": gpu.container or "", "frameworks": fws},
        chain=(f"{facts.driver.source}: kernel module {facts.driver.version}", *gpu.libcuda_chain),
        hint=("start the container with the NVIDIA runtime: docker run --gpus all (NVIDIA Container Toolkit)"
              if gpu.container else "install the NVIDIA driver's user-space libraries (libnvidia-compute) "
              "of the same version as the kernel module"),
        severity=None if fws else "warning")


@check("FDN605", "wsl-libcuda-shadowed", "error", "On WSL2 the loader does not pick /usr/lib/wsl/lib/libcuda.so.1")
def wsl_libcuda_shadowed(facts: Facts, compat):
    """Under WSL2 the GPU is reached through the Windows driver: its ``libcuda.so.1`` lives in
    ``/usr/lib/wsl/lib`` (mounted by WSL, listed in ``/etc/ld.so.conf.d/ld.wsl.conf``). A Linux driver
    installed inside WSL, a CUDA toolkit's driver stub, or a missing loader-cache entry puts another copy
    (or none) first, and CUDA reports no device. Never install a Linux NVIDIA driver inside WSL."""
    gpu = facts.gpu
    if gpu is None or not gpu.wsl or (gpu.libcuda is not None and gpu.libcuda.kind == "wsl"):
        return
    picked = gpu.libcuda.path if gpu.libcuda else None
    yield wsl_libcuda_shadowed.spec.make(
        f"WSL2: the loader picks {picked} instead of /usr/lib/wsl/lib/libcuda.so.1" if picked else
        "WSL2: /usr/lib/wsl/lib/libcuda.so.1 is not on the loader's path",
        {"picked": picked or "", "found_in": gpu.libcuda.found_in if gpu.libcuda else "",
         "wsl_lib": "/usr/lib/wsl/lib"},
        chain=gpu.libcuda_chain,
        hint="put /usr/lib/wsl/lib first (LD_LIBRARY_PATH, or run ldconfig so ld.wsl.conf is in the cache) and "
             "remove any Linux NVIDIA driver installed inside WSL")


@check("FDN606", "cuda-compat-libcuda", "warning", "A cuda-compat libcuda.so.1 is used instead of the driver's")
def cuda_compat_libcuda(facts: Facts, compat):
    """The loader picks a forward-compatibility ``libcuda.so.1`` (the ``cuda-compat`` package, a CUDA image's
    ``/usr/local/cuda/compat``) in front of the installed driver's. That is meant to run a newer CUDA on an
    older data-centre driver. It fails when the kernel driver is as new as the compat library or newer
    (error 803, "unsupported display driver / cuda driver combination") and on GPUs that forward
    compatibility does not support, GeForce and most workstation boards (error 804,
    ``CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE``)."""
    gpu = facts.gpu
    lib = gpu.libcuda if gpu else None
    if lib is None or lib.kind != "compat":
        return
    tables = compat.gpu
    kernel = _kernel_driver(facts)
    problems = []
    have, want = _ver(kernel), _ver(lib.version)
    if have and want and want.major <= have.major:
        problems.append(f"the kernel driver {kernel} is not older than the compat library {lib.version} (error 803)")
    consumer = [g.name for g in gpu.gpus if g.name and tables is not None and (known := tables.by_name(g.name))
                and not known.datacenter]
    if consumer:
        problems.append(f"{consumer[0]} does not support forward compatibility (error 804)")
    folder = posixpath.dirname(lib.path)
    via_env = (lib.found_in or "").startswith("LD_LIBRARY_PATH")
    yield cuda_compat_libcuda.spec.make(
        f"{lib.path} (cuda-compat {lib.version or '?'}) is loaded instead of the driver's libcuda"
        + (": " + "; ".join(problems) if problems else ""),
        {"libcuda": lib.path, "compat_version": lib.version or "", "kernel": kernel or "", "directory": folder,
         "via_ld_library_path": via_env, "problems": problems},
        chain=gpu.libcuda_chain,
        hint=(f"remove {folder} from LD_LIBRARY_PATH" if via_env else f"remove {folder} from the loader path")
        + " so the driver's own libcuda.so.1 loads",
        severity="error" if problems else None)
