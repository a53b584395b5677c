"""The GPU side without running code on a GPU: which GPUs, which user-space driver, which kernels.

* GPUs: ``nvidia-smi --query-gpu=name,compute_cap,driver_version`` when it runs (never under ``--root``:
  an image's tools would describe this machine), else NVML (``libnvidia-ml.so.1`` through ctypes, in a
  subprocess), else the kernel's ``/proc/driver/nvidia/gpus/*/information`` (a name only: the capability
  then comes from ``rules/compat/gpu.toml``).
* ``libcuda.so.1``: the copy the loader model picks (LD_LIBRARY_PATH, ld.so.cache, default dirs), its
  driver version from its file name (``libcuda.so.580.65.06``), and the CUDA version it supports from
  ``cuDriverGetVersion`` in a subprocess (no GPU needed; killed with its process group on a timeout).
  Other copies in the usual places (cuda-compat folders, ``/usr/lib/wsl/lib``) are listed too.
* Kernels: the fat binaries of each GPU framework's libraries (:mod:`fixdnn.facts.fatbin`).

Every value says where it came from; what could not be read is an :class:`Unknown`.
"""

from __future__ import annotations

import csv
import glob
import io
import re
import sys

from fixdnn.facts import fatbin
from fixdnn.facts.loader import LoaderEnv, resolve
from fixdnn.model.facts import Distribution, Framework, FrameworkKernels, Gpu, GpuFacts, LibCuda, Unknown
from fixdnn.target.host import Host, HostError

SONAME = "libcuda.so.1"
WSL_LIB = "/usr/lib/wsl/lib"
_GPUS = "/proc/driver/nvidia/gpus"
_COMPAT_GLOBS = ("/usr/local/cuda/compat", "/usr/local/cuda-*/compat")
_VERSIONED = re.compile(r"^libcuda\.so\.(\d+\.\d+(?:\.\d+)?)$")
_CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")  # Docker, Podman
PROBE_TIMEOUT = 20

# Loads one libcuda by path and prints cuDriverGetVersion (1000*major + 10*minor). No GPU is touched.
_PROBE = r"""
import ctypes, sys
lib = ctypes.CDLL(sys.argv[1])
v = ctypes.c_int(0)
rc = lib.cuDriverGetVersion(ctypes.byref(v))
print(rc, v.value)
"""


def _which(host: Host, name: str) -> str | None:
    """The first ``name`` on the target's PATH that may run (see :func:`_runnable`)."""
    for folder in (host.env("PATH") or "").split(":"):
        path = f"{folder.rstrip('/')}/{name}"
        if folder.startswith("/") and host.is_file(path) and _runnable(host, path):
            return path
    return None


# NVML through ctypes (what nvidia-ml-py wraps), so no Python package is needed: one line per GPU.
_NVML = r"""
import ctypes, sys
nvml = ctypes.CDLL(sys.argv[1])
if nvml.nvmlInit_v2() != 0:
    sys.exit(3)
count, buf = ctypes.c_uint(0), ctypes.create_string_buffer(96)
nvml.nvmlSystemGetDriverVersion(buf, 96)
driver = buf.value.decode()
nvml.nvmlDeviceGetCount_v2(ctypes.byref(count))
for i in range(count.value):
    dev, major, minor = ctypes.c_void_p(), ctypes.c_int(0), ctypes.c_int(0)
    if nvml.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(dev)) != 0:
        continue
    nvml.nvmlDeviceGetName(dev, buf, 96)
    name = buf.value.decode()
    rc = nvml.nvmlDeviceGetCudaComputeCapability(dev, ctypes.byref(major), ctypes.byref(minor))
    print("\t".join([name, f"{major.value}.{minor.value}" if rc == 0 else "", driver]))
nvml.nvmlShutdown()
"""
NVML_SONAME = "libnvidia-ml.so.1"


def _nvml(host: Host, env: LoaderEnv, sources: list[str], unknowns: list[Unknown]) -> list[Gpu]:
    """GPUs from NVML (the library nvidia-smi uses; containers often have it without nvidia-smi)."""
    if host.root is not None:
        return []
    found = resolve(host, NVML_SONAME, (), env).path  # the loader model reads a planted machine's places
    if found is None:
        return []
    res = host.run([sys.executable, "-I", "-c", _NVML, host.on_disk(host.realpath(found))], timeout=PROBE_TIMEOUT,
                   env={"PATH": host.env("PATH") or "/usr/bin:/bin"})
    if res.returncode != 0:
        why = "timed out" if res.timed_out else f"exit {res.returncode}"
        unknowns.append(Unknown(f"NVML ({found})", why))
        return []
    gpus = []
    for line in res.stdout.splitlines():
        name, cc, driver = (line.split("\t") + ["", ""])[:3]
        gpus.append(Gpu(name or None, cc or None, f"NVML {found}", "NVML" if cc else None, None, driver or None))
    sources.append(f"NVML {found}: {len(gpus)} GPU(s)")
    return gpus


def _glob(host: Host, pattern: str) -> list[str]:
    """Target paths matching ``pattern`` (read under --root / the planted machine as the Host maps it)."""
    base = str(host.real(pattern))
    prefix = base[: len(base) - len(pattern)] if base.endswith(pattern) else ""
    return [hit[len(prefix):] for hit in sorted(glob.glob(base))]


def _runnable(host: Host, path: str) -> bool:
    """Programs of an image (--root) describe another machine; with a planted machine (tests), only the
    planted ones run."""
    if host.root is not None:
        return False
    return host.system is None or host.on_disk(path) != path


def _smi(host: Host, sources: list[str], unknowns: list[Unknown]) -> list[Gpu]:
    smi = _which(host, "nvidia-smi")
    if smi is None:
        return []
    res = host.run([host.on_disk(smi), "--query-gpu=name,compute_cap,driver_version,pci.bus_id", "--format=csv,noheader"],
                   timeout=PROBE_TIMEOUT)
    if res.returncode != 0:
        why = "timed out" if res.timed_out else (res.stderr or res.stdout).strip().splitlines()[:1]
        unknowns.append(Unknown("nvidia-smi", f"{smi} failed: {why[0] if isinstance(why, list) and why else why}"))
        return []
    gpus = []
    for row in csv.reader(io.StringIO(res.stdout), skipinitialspace=True):
        if len(row) < 3:
            continue
        name, cc, driver = (x.strip() for x in row[:3])
        bus = row[3].strip() if len(row) > 3 else None
        cc = cc if re.fullmatch(r"\d+\.\d", cc) else None
        gpus.append(Gpu(name or None, cc, "nvidia-smi", "nvidia-smi" if cc else None, bus,
                        driver if re.fullmatch(r"\d+(?:\.\d+)+", driver) else None))
    sources.append(f"{smi}: {len(gpus)} GPU(s)")
    return gpus


def _proc_gpus(host: Host, tables, sources: list[str]) -> list[Gpu]:
    gpus = []
    for folder in host.glob_dirs(_GPUS):
        path = folder + "/information"
        try:
            text = host.read_text(path, limit=16384)
        except HostError:
            continue
        fields = dict(re.findall(r"^([^:\n]+):\s*(.*?)\s*$", text, re.M))
        name = fields.get("Model")
        known = tables.by_name(name) if tables is not None else None
        gpus.append(Gpu(name, known.cc if known else None, path,
                        "by name in rules/compat/gpu.toml" if known else None,
                        fields.get("Bus Location") or folder.rsplit("/", 1)[-1]))
    if gpus:
        sources.append(f"{_GPUS}/*/information: {len(gpus)} GPU(s)")
    return gpus


def _with_table(gpus: list[Gpu], tables) -> list[Gpu]:
    """A GPU nvidia-smi names without a capability (old drivers lack compute_cap) gets the table's."""
    out = []
    for g in gpus:
        known = tables.by_name(g.name) if g.compute_capability is None and tables is not None else None
        if known is not None:
            g = Gpu(g.name, known.cc, g.source, "by name in rules/compat/gpu.toml", g.bus_id, g.driver_version)
        out.append(g)
    return out


def _kind(path: str) -> str:
    if path.startswith(WSL_LIB + "/"):
        return "wsl"
    if "/compat/" in path or "cuda-compat" in path:
        return "compat"
    return "driver"


def _describe(host: Host, path: str, found_in: str | None) -> LibCuda:
    real = host.realpath(path)
    m = _VERSIONED.match(real.rsplit("/", 1)[-1])
    kind = _kind(path) if _kind(path) != "driver" else _kind(real)
    if m:
        return LibCuda(path, real, kind, m.group(1), f"file name {real.rsplit('/', 1)[-1]}", found_in=found_in)
    return LibCuda(path, real, kind, found_in=found_in)


def _driver_version(host: Host, lib: LibCuda, unknowns: list[Unknown]) -> LibCuda:
    """cuDriverGetVersion of this copy, in a subprocess (a broken driver library can crash the process)."""
    if host.root is not None:
        return lib
    res = host.run([sys.executable, "-I", "-c", _PROBE, host.on_disk(lib.realpath)], timeout=PROBE_TIMEOUT,
                   env={"PATH": host.env("PATH") or "/usr/bin:/bin"})
    m = re.fullmatch(r"0 (\d+)", res.stdout.strip())
    if not m:
        why = "timed out" if res.timed_out else (res.stderr.strip().splitlines() or [res.stdout.strip()])[-1]
        unknowns.append(Unknown(f"cuDriverGetVersion of {lib.path}", why or f"exit {res.returncode}"))
        return LibCuda(lib.path, lib.realpath, lib.kind, lib.version, lib.version_source, None, lib.found_in,
                       f"cuDriverGetVersion failed: {why}")
    v = int(m.group(1))
    return LibCuda(lib.path, lib.realpath, lib.kind, lib.version, lib.version_source,
                   f"{v // 1000}.{v % 1000 // 10}", lib.found_in)


def _found_in(resolution) -> str | None:
    for step in resolution.chain:
        if step.outcome == "found":
            return step.detail
    return resolution.source


def _other_copies(host: Host, env: LoaderEnv, picked: str | None) -> list[LibCuda]:
    places: list[tuple[str, str]] = []
    for i, d in enumerate(env.ld_library_path):
        if d.startswith("/"):
            places.append((d, f"LD_LIBRARY_PATH[{i}]"))
    places += [(e[1].rsplit("/", 1)[0], "ld.so.cache") for e in env.ld_cache if e[0] == SONAME]
    places += [(d, "default directory") for d in env.default_dirs]
    places.append((WSL_LIB, "WSL2 driver folder"))
    for pattern in _COMPAT_GLOBS:
        places += [(hit, "cuda-compat folder") for hit in _glob(host, pattern)]
    seen = {host.realpath(picked)} if picked else set()
    out = []
    for folder, label in places:
        path = f"{folder.rstrip('/')}/{SONAME}"
        if not host.is_file(path):
            continue
        real = host.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        out.append(_describe(host, path, label))
    return out


def _kernels(host: Host, frameworks: tuple[Framework, ...], dists: tuple[Distribution, ...], tables,
             cache: fatbin.Cache, unknowns: list[Unknown], gpus: bool) -> tuple[FrameworkKernels, ...]:
    """Each GPU framework's compiled architectures; with GPUs on the machine, a build whose libraries hold no
    fat binary is an unknown (no verdict on whether it runs there)."""
    if tables is None:
        return ()
    by_name = {d.name: d for d in dists}
    out = []
    for fw in frameworks:
        dist = by_name.get(fw.distribution)
        patterns = tables.kernels.get(fw.name, ())
        if not fw.gpu_build or dist is None or not patterns:
            continue
        files: list[str] = []
        for pattern in patterns:
            for hit in _glob(host, f"{dist.location.rstrip('/')}/{pattern}"):
                if hit not in files:
                    files.append(hit)
        libs = tuple(cache.images(host, f) for f in files)
        kernels = FrameworkKernels(fw.name, fw.version, libs)
        if gpus and not any(lib.entries for lib in libs):
            read = ", ".join(f for f in files) or "no library matched " + ", ".join(patterns)
            unknowns.append(Unknown(f"kernels of {fw.name}", f"no CUDA fat binary found ({read})"))
        out.append(kernels)
    return tuple(out)


def gather(host: Host, frameworks: tuple[Framework, ...], dists: tuple[Distribution, ...], env: LoaderEnv,
           tables, cache: fatbin.Cache | None = None) -> tuple[GpuFacts, list[Unknown]]:
    sources: list[str] = []
    unknowns: list[Unknown] = []
    gpus = _smi(host, sources, unknowns) or _nvml(host, env, sources, unknowns)
    gpus = _with_table(gpus, tables) if gpus else _proc_gpus(host, tables, sources)
    for g in gpus:
        if g.compute_capability is None:  # no verdict on its kernels: said, never taken as fine
            unknowns.append(Unknown(f"compute capability of {g.name or g.bus_id or 'a GPU'}",
                                    f"{g.source} does not say it and rules/compat/gpu.toml has no such name"))
    resolution = resolve(host, SONAME, (), env)
    libcuda = None
    if resolution.path is not None:
        libcuda = _driver_version(host, _describe(host, resolution.path, _found_in(resolution)), unknowns)
        sources.append(f"{SONAME}: {resolution.path} ({libcuda.found_in})")
    others = tuple(_other_copies(host, env, resolution.path))
    wsl = host.is_dir(WSL_LIB)
    container = next((m for m in _CONTAINER_MARKERS if host.exists(m)), None)
    kernels = _kernels(host, frameworks, dists, tables, cache or fatbin.Cache(None), unknowns, bool(gpus))
    return GpuFacts(
        gpus=tuple(gpus),
        libcuda=libcuda,
        libcuda_copies=others,
        libcuda_chain=tuple(resolution.explain()),
        wsl=wsl,
        container=container,
        kernels=kernels,
        sources=tuple(sources),
    ), unknowns
