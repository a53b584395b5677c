"""The facts about a target environment: frozen, JSON round-trippable values, gathered read-only.

A fact that could not be read is an :class:`Unknown` with its reason, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field

FACTS_SCHEMA = "fixdnn.facts/1"


@dataclass(frozen=True)
class LoaderStep:
    source: str
    directory: str | None
    outcome: str
    detail: str


@dataclass(frozen=True)
class Resolution:
    soname: str
    requester: str | None
    path: str | None  # the file the loader maps, as it names it (l_name); None when the load fails
    source: str | None
    chain: tuple[LoaderStep, ...]
    error: str | None = None  # the loader's error when the load fails ("... cannot open shared object file")

    def explain(self) -> list[str]:
        who = f" for {self.requester}" if self.requester else ""
        if self.path is not None:
            head = f"{self.soname}{who} → {self.path} (via {self.source})"
        else:
            head = f"{self.soname}{who}: not loaded: {self.error or 'not found'}"
        lines = [head]
        for step in self.chain:
            where = f" → {step.directory}" if step.directory is not None else ""
            outcome = f"found {self.soname}" if step.outcome == "found" and step.source != "already-loaded" else step.outcome
            lines.append(f"  {step.detail}{where}: {outcome}")
        return lines


@dataclass(frozen=True)
class Unknown:
    what: str
    reason: str


@dataclass(frozen=True)
class TargetInfo:
    """What the target interpreter says about itself (or what its files say, without one)."""

    python: str | None
    python_version: str | None
    prefix: str | None
    base_prefix: str | None
    kind: str  # venv | conda | system | files
    platform: str | None = None
    machine: str | None = None
    site_dirs: tuple[str, ...] = ()
    user_site: str | None = None
    user_site_enabled: bool = False
    sys_path: tuple[str, ...] = ()  # absolute, in import order ('' already turned into the cwd)
    sys_path_origins: tuple[str, ...] = ()  # why each entry is there: cwd | pythonpath | user-site | site | stdlib | pth
    cwd: str = "/"
    has_pip: bool | None = None
    chosen_because: str = ""  # why this environment was the target (--python, VIRTUAL_ENV, the project's .venv...)
    markers: dict[str, str] = field(default_factory=dict)  # its PEP 508 marker environment (empty: no interpreter)
    wheel_env: dict[str, str] = field(default_factory=dict)  # soabi, glibc ("" when not glibc): its wheel tags
    # Code a plain `python` of the target runs at startup and diagnosis did not: ".pth file:line: import x"
    # and sitecustomize / usercustomize modules (read as text, never executed by fixdnn's static probe).
    startup_code: tuple[str, ...] = ()


@dataclass(frozen=True)
class Distribution:
    name: str  # canonical (PEP 503) name
    display_name: str
    version: str
    location: str  # the site directory holding it
    metadata_dir: str  # the .dist-info / .egg-info directory
    requires: tuple[str, ...] = ()
    installer: str | None = None
    record: str | None = None  # path of RECORD, when there is one


@dataclass(frozen=True)
class Need:
    """One library family a framework needs, and where that knowledge comes from."""

    library: str  # cudnn | cudart | cublas | cublasLt | nvrtc
    major: int
    minimum: str | None  # lowest acceptable version with that major ("9.3"); None = any of that major
    pin: str | None = None  # the exact pin the framework declares ("nvidia-cudnn-cu13==9.24.0.43")
    source: str = ""
    wheel: str | None = None  # the distribution it asks for, pinned or not ("nvidia-cudnn-cu12")


@dataclass(frozen=True)
class Framework:
    name: str  # torch | tensorflow | jax | onnxruntime | cupy
    distribution: str
    version: str
    gpu_build: bool
    cuda: str | None = None  # CUDA version it was built with ("13.0")
    needs: tuple[Need, ...] = ()
    loaded_by: str | None = None  # the object whose loader context finds cuDNN
    load_kind: str = "needed"  # needed | dlopen | python-preload
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class LibraryCopy:
    family: str  # cudnn, cudnn_graph, cudnn_cnn, ..., cudart, cublas, cublasLt, nvrtc, cuda
    path: str  # the file as found (often a symlink name such as libcudnn.so.9)
    realpath: str
    soname: str | None
    version: str | None  # "9.24.0"
    version_source: str | None
    owner: str | None  # "pip:nvidia-cudnn-cu13 9.24.0.43", "conda:cudnn 9.1.0", or None
    found_in: tuple[str, ...] = ()  # every place that reaches it: "sys.path[2]", "LD_LIBRARY_PATH[0]", ...
    error: str | None = None  # e.g. a truncated ELF file
    aliases: tuple[str, ...] = ()  # other names of the same file (soname links, $ORIGIN/.. paths the loader uses)


@dataclass(frozen=True)
class Driver:
    version: str | None
    source: str | None


@dataclass(frozen=True)
class LoadOutcome:
    """Which copy of one library a framework would really load, and the chain of reasons."""

    framework: str
    library: str  # family
    soname: str
    path: str | None
    resolution: Resolution
    preload: tuple[str, ...] = ()  # torch/JAX style Python-side preload steps that came first
    search: tuple[LoaderStep, ...] = ()  # every place the loader would try, in order (loader.search_order)


@dataclass(frozen=True)
class LinkCheck:
    """One binding between two DNN / CUDA libraries that would load, checked as glibc checks it: every
    version the requester needs (DT_VERNEED) is defined by the provider (DT_VERDEF), and every undefined
    versioned symbol is defined there at that version (all are bound at load: Python loads with RTLD_NOW)."""

    requester: str
    soname: str  # the DT_NEEDED entry
    provider: str | None  # the file the loader model maps for it; None when it is not found (reported elsewhere)
    frameworks: tuple[str, ...] = ()  # whose load reaches this binding
    missing_versions: tuple[str, ...] = ()
    missing_symbols: tuple[str, ...] = ()  # "symbol@version", the first few
    missing_count: int = 0  # all missing symbols, however many
    unknown: str | None = None  # why the binding could not be checked
    requester_owner: str | None = None  # "nvidia-cusparse-cu12 12.5.10.65": the distribution that installed it
    provider_owner: str | None = None

    @property
    def broken(self) -> bool:
        return bool(self.missing_versions or self.missing_count)

    def loader_message(self) -> str:
        """What ld.so says when this binding fails (dl-version.c / dl-lookup.c wording)."""
        if self.missing_versions:
            return (f"{self.provider}: version `{self.missing_versions[0]}' not found "
                    f"(required by {self.requester})")
        symbol, _, version = self.missing_symbols[0].partition("@")
        return f"{self.requester}: undefined symbol: {symbol}, version {version}"


@dataclass(frozen=True)
class BadFile:
    """One file of an installed package that differs from what its installer recorded."""

    path: str  # as recorded (RECORD row, conda ``_path``)
    problem: str  # missing | size | sha256 (or the recorded algorithm) | unreadable
    expected: str | None = None  # "1234 bytes", "sha256=<as recorded>"
    actual: str | None = None  # same format; the reason when unreadable; None when missing
    link: str | None = None  # a symlink now sits there, pointing to this (target path)


@dataclass(frozen=True)
class InstallCheck:
    """One installed package's files verified against its own record (fixdnn.facts.integrity)."""

    distribution: str  # canonical pip name, or the conda package name
    version: str
    source: str  # pip | conda
    record: str  # the RECORD / conda-meta JSON that was read
    checked: int = 0  # files compared
    skipped: int = 0  # entries with nothing to compare (no hash, links, refused paths)
    bad: tuple[BadFile, ...] = ()  # capped; bad_count is the full number
    bad_count: int = 0
    size_only: int = 0  # of `checked`: compared by size, not yet hashed (the hash is --verify-all's)


@dataclass(frozen=True)
class Facts:
    target: TargetInfo
    distributions: tuple[Distribution, ...] = ()
    frameworks: tuple[Framework, ...] = ()
    libraries: tuple[LibraryCopy, ...] = ()
    loads: tuple[LoadOutcome, ...] = ()
    driver: Driver | None = None
    env: dict[str, str] = field(default_factory=dict)
    unknowns: tuple[Unknown, ...] = ()
    schema: str = FACTS_SCHEMA
    cpu: CpuFacts | None = None  # OpenMP / MKL runtimes, thread settings, loader search path
    conda_packages: tuple[CondaPackage, ...] = ()
    integrity: tuple[InstallCheck, ...] = ()  # packages verified file by file (install-corrupted)
    lock: LockFacts | None = None  # the lockfile given with --lock (lockfile-drift), read by fixdnn.facts.lockfile
    gpu: GpuFacts | None = None  # GPUs, the user-space driver, compiled kernels (fixdnn.facts.gpu)
    links: tuple[LinkCheck, ...] = ()  # symbol-version bindings between the DNN / CUDA libraries that would load

    def distribution(self, name: str) -> Distribution | None:
        for dist in self.distributions:
            if dist.name == name:
                return dist
        return None

    def copies(self, family: str) -> tuple[LibraryCopy, ...]:
        return tuple(c for c in self.libraries if c.family == family)

    def copy_at(self, path: str | None) -> LibraryCopy | None:
        if path is None:
            return None
        for c in self.libraries:
            if path in (c.path, c.realpath) or path in c.aliases:
                return c
        return None

    def loads_of(self, framework: str) -> tuple[LoadOutcome, ...]:
        return tuple(o for o in self.loads if o.framework == framework)


@dataclass(frozen=True)
class CondaPackage:
    """One record of ``<prefix>/conda-meta/*.json``."""

    name: str
    version: str
    build: str
    channel: str | None  # short name: "conda-forge", "pytorch", "main"
    files: int  # how many files the record lists
    prefix: str
    build_number: int | None = None


@dataclass(frozen=True)
class NativeLib:
    """An OpenMP runtime or MKL library a process of the environment could load."""

    kind: str  # openmp | mkl
    name: str  # libiomp5, libgomp, libomp, libmkl_rt, libmkl_avx2, ...
    vendor: str  # intel | gnu | llvm
    role: str  # runtime (OpenMP) | rt | core | dispatch | threading | interface | other (MKL)
    path: str
    realpath: str
    soname: str | None
    major: str | None = None  # the soname's number: "2" for libmkl_rt.so.2
    version: str | None = None
    version_source: str | None = None
    owner: str | None = None  # "pip:mkl 2024.2.0", "conda:intel-openmp 2024.0.0", or None
    sha256: str | None = None  # from the conda record's paths_data, when it has one
    found_in: tuple[str, ...] = ()
    error: str | None = None


@dataclass(frozen=True)
class RuntimeUse:
    """One package that pulls in one OpenMP / MKL library, and which file a process would map for it."""

    consumer: str  # torch | tensorflow | numpy | mkl | LD_PRELOAD | ...
    requester: str  # the object whose DT_NEEDED names it (or the vendoring directory)
    soname: str
    path: str | None  # realpath of the file mapped; None when the loader finds nothing
    how: str  # one line: "DT_NEEDED via DT_RPATH", "already loaded by torch", "vendored in numpy.libs", ...


@dataclass(frozen=True)
class PathEntry:
    """One element of LD_LIBRARY_PATH or LD_PRELOAD as the loader will read it."""

    variable: str  # LD_LIBRARY_PATH | LD_PRELOAD
    index: int
    raw: str
    kind: str  # absolute | relative | empty | name (LD_PRELOAD without '/')
    exists: bool = False
    is_dir: bool = False
    realpath: str | None = None
    writable: tuple[str, ...] = ()  # "<dir> (mode 0777, world-writable)" for the entry and its parents


@dataclass(frozen=True)
class CpuFacts:
    cpu_count: int | None = None
    cpu_count_source: str | None = None
    libraries: tuple[NativeLib, ...] = ()
    uses: tuple[RuntimeUse, ...] = ()
    search_path: tuple[PathEntry, ...] = ()
    mkl_symbols: dict[str, bool | None] = field(default_factory=dict)  # symbol -> exported by a reachable MKL
    conda_openmp: str | None = None  # gnu | llvm, from _openmp_mutex's build string

    def loaded_runtimes(self) -> tuple[NativeLib, ...]:
        """Distinct OpenMP runtime files one process importing everything would map."""
        seen: dict[str, NativeLib] = {}
        for use in self.uses:
            lib = self.lib_at(use.path)
            if lib is not None and lib.kind == "openmp" and lib.realpath not in seen:
                seen[lib.realpath] = lib
        return tuple(seen.values())

    def lib_at(self, path: str | None) -> NativeLib | None:
        if path is None:
            return None
        for lib in self.libraries:
            if path in (lib.path, lib.realpath):
                return lib
        return None


@dataclass(frozen=True)
class LockedPackage:
    """One package of a conda-lock lockfile, for the target's platform (plain values: no conda-lock needed)."""

    name: str  # conda name, or the canonical (PEP 503) pip name
    manager: str  # conda | pip
    version: str
    build: str | None = None  # conda build string
    url: str = ""
    md5: str | None = None
    sha256: str | None = None
    optional: bool = False  # only in optional categories (dev, extras): not required to be installed


@dataclass(frozen=True)
class LockFacts:
    """The lockfile given with ``--lock FILE``, and which package names count as DNN-relevant."""

    path: str
    platform: str  # the conda subdir compared ("linux-64")
    packages: tuple[LockedPackage, ...] = ()
    pip_patterns: tuple[str, ...] = ()  # rules/compat/integrity.toml globs in force when it was read
    conda_patterns: tuple[str, ...] = ()


@dataclass(frozen=True)
class KernelImages:
    """The CUDA kernels compiled into one shared library: the entries of its ``.nv_fatbin`` section."""

    path: str
    sass: tuple[str, ...] = ()  # machine code, one per architecture: "sm_80", "sm_90a", "sm_100f"
    ptx: tuple[str, ...] = ()  # PTX the driver can JIT-compile: "compute_120"
    ptx_isa: str | None = None  # the newest PTX ISA version among the PTX entries ("9.0")
    entries: int = 0
    error: str | None = None  # unreadable file, truncated fat binary
    partial: tuple[str, ...] = ()  # archs only a few of its compiled files have ("sm_90a" for some kernels)
    containers: int = 0  # fat binaries (one per compiled source file)


@dataclass(frozen=True)
class FrameworkKernels:
    """Which GPUs a framework build has kernels for, from the fat binaries of its CUDA libraries."""

    framework: str
    version: str
    libraries: tuple[KernelImages, ...] = ()

    @property
    def sass(self) -> tuple[str, ...]:
        return _arch_union(lib.sass for lib in self.libraries)

    @property
    def ptx(self) -> tuple[str, ...]:
        return _arch_union(lib.ptx for lib in self.libraries)

    @property
    def partial(self) -> tuple[str, ...]:
        return tuple(a for a in _arch_union(lib.partial for lib in self.libraries) if a not in self.sass + self.ptx)

    @property
    def ptx_isa(self) -> str | None:
        isas = [lib.ptx_isa for lib in self.libraries if lib.ptx_isa]
        return max(isas, key=lambda v: tuple(int(x) for x in v.split("."))) if isas else None


def arch_number(arch: str) -> int:
    """90 for "sm_90", "sm_90a" and "compute_90"."""
    digits = arch.split("_", 1)[-1].rstrip("abcdefghijklmnopqrstuvwxyz")
    return int(digits) if digits.isdigit() else 0


def _arch_union(groups) -> tuple[str, ...]:
    return tuple(sorted({a for g in groups for a in g}, key=lambda a: (arch_number(a), a)))


@dataclass(frozen=True)
class Gpu:
    """One NVIDIA GPU, from what exists without running code on it."""

    name: str | None
    compute_capability: str | None  # "9.0"; None when neither nvidia-smi nor the name table knows
    source: str  # where the GPU was seen: "nvidia-smi", "/proc/driver/nvidia/gpus/0000:01:00.0/information"
    cc_source: str | None = None  # "nvidia-smi", "NVML", "rules/compat/gpus.toml (by name)"
    bus_id: str | None = None
    driver_version: str | None = None  # as nvidia-smi / NVML report it


@dataclass(frozen=True)
class LibCuda:
    """A user-space CUDA driver library (``libcuda.so.1``)."""

    path: str
    realpath: str
    kind: str  # driver | compat (a cuda-compat forward-compatibility package) | wsl (/usr/lib/wsl/lib)
    version: str | None = None  # driver version of this library ("580.65.06"), from its file name
    version_source: str | None = None
    cuda_version: str | None = None  # the newest CUDA it supports ("13.0"), from cuDriverGetVersion
    found_in: str | None = None  # how the loader reaches it ("LD_LIBRARY_PATH[0]", "ld.so.cache", ...)
    error: str | None = None


@dataclass(frozen=True)
class GpuFacts:
    gpus: tuple[Gpu, ...] = ()
    libcuda: LibCuda | None = None  # the copy the loader would pick for libcuda.so.1; None: none reachable
    libcuda_copies: tuple[LibCuda, ...] = ()  # every other copy seen in the usual places
    libcuda_chain: tuple[str, ...] = ()  # the loader model's steps for libcuda.so.1
    wsl: bool = False  # /usr/lib/wsl/lib exists: a WSL2 GPU layout
    container: str | None = None  # the marker file that says this runs in a container (/.dockerenv, ...)
    kernels: tuple[FrameworkKernels, ...] = ()
    sources: tuple[str, ...] = ()  # what was read or run, and what it said, one line each
