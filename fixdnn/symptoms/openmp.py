"""CPU-side symptoms: OpenMP runtimes, MKL, TensorFlow's oneDNN switch, thread variables.

Every check reads ``facts.cpu`` (see :mod:`fixdnn.facts.cpu`) and the tables of ``rules/compat/cpu.toml``;
nothing here touches the disk.
"""

from __future__ import annotations

import re

from packaging.version import InvalidVersion, Version

from fixdnn.facts.cpu import CpuRules, kmp_true, load_rules
from fixdnn.model.facts import Facts, NativeLib
from fixdnn.symptoms.registry import check


def _rules() -> CpuRules:
    return load_rules()


def _registers(rules: CpuRules, lib: NativeLib) -> bool:
    return any(rt.registers and rt.vendor == lib.vendor and rt.name == lib.name for rt in rules.openmp)


def _users(facts: Facts, lib: NativeLib) -> list[str]:
    return sorted({u.consumer for u in facts.cpu.uses if u.path in (lib.path, lib.realpath)})


def _lib_evidence(facts: Facts, lib: NativeLib) -> dict:
    consumers = _users(facts, lib)
    return {"path": lib.path, "realpath": lib.realpath, "name": lib.name, "vendor": lib.vendor, "soname": lib.soname,
            "owner": lib.owner, "version": lib.version, "used_by": consumers}


def _use_chain(facts: Facts, libs: list[NativeLib]) -> list[str]:
    paths = {p for lib in libs for p in (lib.path, lib.realpath)}
    return [f"{u.consumer}: {u.requester} needs {u.soname} → {u.path} ({u.how})"
            for u in facts.cpu.uses if u.path in paths]


def _describe(lib: NativeLib) -> str:
    owner = f", {lib.owner}" if lib.owner else ""
    return f"{lib.vendor} {lib.name} at {lib.path}{owner}"


@check("FDN201", "openmp-duplicate-runtime", "error", "Two OpenMP runtimes would share one process")
def openmp_duplicate_runtime(facts: Facts, compat):
    """Intel's OpenMP runtime (``libiomp5``) and LLVM's (``libomp``, the same code base) register themselves in
    the process when they start; a second registered copy finds the first and aborts:
    ``OMP: Error #15: Initializing libiomp5.so, but found libiomp5.so already initialized.`` (exit 134).
    fixdnn simulates one process that imports every installed framework, the scientific stack and every
    package that ships its own OpenMP or MKL copy (paddlepaddle's ``paddle/libs/libiomp5.so``, an
    auditwheel-renamed ``diskannpy.libs/libiomp5-<hash>.so``): each extension module's DT_NEEDED is resolved
    by the loader model, and a SONAME already loaded is reused, as ld.so does. The packages whose libraries
    map each copy are named. Two such runtimes under different SONAMEs (``libiomp5.so`` and ``libomp.so``, or an
    auditwheel-renamed ``libiomp5-<hash>.so``) are an **error**. Intel's next to GNU's ``libgomp`` does not
    abort but gives two thread pools fighting for the cores: a **warning**. The fix is one runtime: install
    numpy, torch and mkl from one channel and remove the duplicate ``intel-openmp`` / ``llvm-openmp``; never
    ``KMP_DUPLICATE_LIB_OK=TRUE`` (FDN202)."""
    if facts.cpu is None:
        return
    rules = _rules()
    loaded = facts.cpu.loaded_runtimes()
    kmp = [lib for lib in loaded if _registers(rules, lib)]
    gnu = [lib for lib in loaded if lib.vendor == "gnu"]
    dup_ok = kmp_true(rules, facts.env.get("KMP_DUPLICATE_LIB_OK"))
    if len(kmp) >= 2:
        first, second = kmp[0], kmp[1]
        tail = (" KMP_DUPLICATE_LIB_OK hides the abort, not the clash." if dup_ok else
                f" The process aborts: OMP: Error #15: Initializing {second.soname or second.name}, but found "
                f"{first.soname or first.name} already initialized.")
        who = "; ".join(f"{lib.path} for {', '.join(_users(facts, lib)) or 'a preload'}" for lib in kmp)
        yield openmp_duplicate_runtime.spec.make(
            f"{len(kmp)} copies of the Intel/LLVM OpenMP runtime would be loaded into one process ({who}).{tail}",
            {"runtimes": [_lib_evidence(facts, lib) for lib in kmp], "kmp_duplicate_lib_ok": dup_ok,
             "gnu_runtimes": [_lib_evidence(facts, lib) for lib in gnu]},
            chain=[_describe(lib) for lib in kmp] + _use_chain(facts, kmp),
            hint="keep one OpenMP runtime: install numpy, torch and mkl from one channel, remove the duplicate "
                 "intel-openmp / llvm-openmp copy; do not set KMP_DUPLICATE_LIB_OK")
    elif kmp and gnu:
        yield openmp_duplicate_runtime.spec.make(
            f"Intel/LLVM OpenMP ({kmp[0].path}) and GNU OpenMP ({gnu[0].path}) would run side by side in one "
            "process: two thread pools oversubscribe the CPU.",
            {"runtimes": [_lib_evidence(facts, lib) for lib in kmp + gnu], "kmp_duplicate_lib_ok": dup_ok,
             "gnu_runtimes": [_lib_evidence(facts, lib) for lib in gnu]},
            chain=[_describe(lib) for lib in kmp + gnu] + _use_chain(facts, kmp + gnu),
            hint="use one OpenMP vendor (e.g. MKL_THREADING_LAYER=GNU with GNU-OpenMP torch), or packages from "
                 "one channel", severity="warning")


@check("FDN202", "kmp-duplicate-lib-ok", "warning", "KMP_DUPLICATE_LIB_OK hides a duplicate OpenMP runtime")
def kmp_duplicate_lib_ok(facts: Facts, compat):
    """``KMP_DUPLICATE_LIB_OK`` set to a value the runtime reads as true (``TRUE``, ``1``, ``yes``, ``on``,
    ``t``... as ``__kmp_str_match_true`` does) lets a second Intel/LLVM OpenMP runtime start instead of
    aborting. Intel's own message calls this "unsafe, unsupported, undocumented": two runtimes in one
    process may crash or silently produce incorrect results. Remove it and fix the duplicate (FDN201)."""
    rules = _rules()
    value = facts.env.get("KMP_DUPLICATE_LIB_OK")
    if not kmp_true(rules, value):
        return
    clash = facts.cpu is not None and sum(1 for lib in facts.cpu.loaded_runtimes() if _registers(rules, lib)) >= 2
    yield kmp_duplicate_lib_ok.spec.make(
        f"KMP_DUPLICATE_LIB_OK={value!r} is set: a duplicate OpenMP runtime would run instead of aborting"
        + (" (and this environment has one, see FDN201)." if clash else "."),
        {"variable": "KMP_DUPLICATE_LIB_OK", "value": value, "duplicate_predicted": clash},
        chain=[f"KMP_DUPLICATE_LIB_OK={value!r} reads as true for the Intel/LLVM runtime"],
        hint="unset KMP_DUPLICATE_LIB_OK and keep a single OpenMP runtime")


def _installed(facts: Facts, names: tuple[str, ...]) -> list[str]:
    found = [f"pip:{d.name} {d.version}" for d in facts.distributions if d.name in names]
    found += [f"conda:{p.name} {p.version}" for p in facts.conda_packages if p.name in names]
    return found


@check("FDN203", "mkl-threading-layer-conflict", "error", "MKL's Intel threading layer clashes with GNU OpenMP")
def mkl_threading_layer_conflict(facts: Facts, compat):
    """MKL picks its threading layer from ``MKL_THREADING_LAYER`` (``INTEL`` when unset). When a framework
    built with GNU OpenMP (``libgomp``, e.g. torch) is in the same process, mkl-service refuses:
    ``Error: mkl-service + Intel(R) MKL: MKL_THREADING_LAYER=INTEL is incompatible with libgomp.so.1
    library.`` (an **error** when mkl-service is installed); without mkl-service, or with
    ``MKL_SERVICE_FORCE_INTEL`` set, both runtimes run side by side (a **warning**). The fix is
    ``MKL_THREADING_LAYER=GNU``."""
    if facts.cpu is None:
        return
    rules = _rules()
    gnu = [lib for lib in facts.cpu.loaded_runtimes() if lib.vendor == "gnu"]
    if not gnu:
        return
    mkl_present = any(lib.kind == "mkl" and lib.role in ("rt", "core") for lib in facts.cpu.libraries)
    service = _installed(facts, rules.service_packages)
    if not mkl_present and not service:
        return
    raw = facts.env.get("MKL_THREADING_LAYER")
    layer = (raw or rules.layer_default).strip().upper()
    if layer not in rules.layer_clash:
        return
    forced = bool(facts.env.get(rules.force_variable))
    severity = "error" if service and not forced else "warning"
    source = f"MKL_THREADING_LAYER={raw!r}" if raw is not None else f"MKL_THREADING_LAYER unset (default {rules.layer_default})"
    yield mkl_threading_layer_conflict.spec.make(
        f"MKL would use the {layer} threading layer while GNU OpenMP ({gnu[0].path}) is loaded"
        + (": importing numpy after torch fails in mkl-service." if severity == "error" else
           ": two OpenMP runtimes would compete for the cores."),
        {"layer": layer, "variable": raw, "gnu_runtimes": [_lib_evidence(facts, lib) for lib in gnu],
         "mkl_service": service, "forced": forced},
        chain=[source] + _use_chain(facts, gnu) + ([f"mkl-service installed: {', '.join(service)}"] if service else []),
        hint="export MKL_THREADING_LAYER=GNU", severity=severity)


def _reachable_dirs(facts: Facts) -> set[str]:
    return {e.raw.rstrip("/") for e in facts.cpu.search_path if e.variable == "LD_LIBRARY_PATH" and e.kind == "absolute"}


@check("FDN204", "mkl-incomplete", "error", "libmkl_rt is reachable but its CPU dispatch libraries are not")
def mkl_incomplete(facts: Facts, compat):
    """``libmkl_rt`` (or ``libmkl_core``) loads a CPU-specific kernel library (``libmkl_avx2``,
    ``libmkl_avx512``, ``libmkl_def``...) at the first call. When none of the same major sits next to it or
    on LD_LIBRARY_PATH, MKL stops the process: ``Intel MKL FATAL ERROR: Cannot load libmkl_avx2.so or
    libmkl_def.so.`` Usual causes: a half-installed MKL, mixed MKL installs, LD_LIBRARY_PATH pointing at
    another MKL. Reinstall one consistent MKL (``conda install mkl mkl-service numpy`` from one channel, or
    ``pip install --force-reinstall mkl``)."""
    if facts.cpu is None:
        return
    libs = facts.cpu.libraries
    extra = _reachable_dirs(facts)
    for lib in sorted(libs, key=lambda x: x.role != "rt"):  # libmkl_rt first: it is what users link
        if lib.kind != "mkl" or lib.role not in ("rt", "core") or lib.error is not None:
            continue
        if lib.found_in and all(place == "/opt/intel" for place in lib.found_in):
            continue
        dirs = {lib.path.rsplit("/", 1)[0], lib.realpath.rsplit("/", 1)[0]} | extra
        dispatch = [d for d in libs if d.kind == "mkl" and d.role == "dispatch" and d.major == lib.major
                    and (d.path.rsplit("/", 1)[0] in dirs or d.realpath.rsplit("/", 1)[0] in dirs) and d.error is None]
        if dispatch:
            continue
        others = [d.path for d in libs if d.kind == "mkl" and d.role == "dispatch"]
        yield mkl_incomplete.spec.make(
            f"{lib.path} has no CPU dispatch library (libmkl_avx2 / libmkl_def ...) of major {lib.major} next to it: "
            f"MKL would stop with \"Cannot load libmkl_avx2.so or libmkl_def.so\".",
            {"library": lib.path, "owner": lib.owner, "major": lib.major, "searched": sorted(dirs),
             "other_dispatch": others},
            chain=[f"{lib.name} {lib.path} ({lib.owner or 'no owner'})", f"searched for libmkl_<cpu>.so.{lib.major} in: "
                   + ", ".join(sorted(dirs))] + ([f"other MKL dispatch libraries: {', '.join(others)}"] if others else []),
            hint=f"reinstall one consistent MKL ({lib.owner.split(' ')[0].split(':')[-1] if lib.owner else 'mkl'})")
        return


@check("FDN205", "mkl-ijit-symbol", "error", "The installed MKL release breaks the framework build")
def mkl_ijit_symbol(facts: Facts, compat):
    """Conda PyTorch from the ``pytorch`` channel was built against MKL <= 2024.0, whose libraries exported
    the ITT symbol ``iJIT_NotifyEvent``; MKL 2024.1 removed it, and ``import torch`` fails with
    ``libtorch_cpu.so: undefined symbol: iJIT_NotifyEvent``. fixdnn reports it when such a PyTorch sits next
    to an MKL from the breaking release on, and no MKL library it would load still exports the symbol.
    Pin ``mkl=2024.0`` or use the pip wheels (which link MKL statically)."""
    if facts.cpu is None:
        return
    for brk in _rules().mkl_breaks:
        fw = next((p for p in facts.conda_packages if p.name == brk.conda_package and p.channel in brk.channels), None)
        mkl = next((p for p in facts.conda_packages if p.name == "mkl"), None)
        if fw is None or mkl is None:
            continue
        try:
            if Version(mkl.version) < brk.mkl_from:
                continue
        except InvalidVersion:
            continue
        exported = facts.cpu.mkl_symbols.get(brk.symbol)
        if exported is True:
            continue
        yield mkl_ijit_symbol.spec.make(
            f"conda {fw.name} {fw.version} ({fw.channel}) with conda mkl {mkl.version}: import fails with "
            f"\"{brk.message}\" (MKL >= {brk.mkl_from} dropped it).",
            {"framework": brk.framework, "package": fw.name, "package_version": fw.version, "channel": fw.channel,
             "mkl_version": mkl.version, "symbol": brk.symbol, "exported": exported, "fix_pin": brk.fix_pin,
             "source": brk.source},
            chain=[f"conda:{fw.name} {fw.version} build {fw.build} from {fw.channel}",
                   f"conda:mkl {mkl.version} >= {brk.mkl_from}",
                   f"{brk.symbol} exported by a loaded MKL library: {exported}"],
            hint=f"conda install mkl={brk.fix_pin} (or use the pip {brk.framework} wheels)")


def _tf(facts: Facts, compat) -> tuple[str, str] | None:
    for fw in facts.frameworks:
        if fw.name == "tensorflow":
            return fw.distribution, fw.version
    names = tuple(getattr(compat, "tf_distributions", ())) or ("tensorflow", "tensorflow-cpu", "tf-nightly")
    for dist in facts.distributions:
        if dist.name in names:
            return dist.name, dist.version
    return None


@check("FDN206", "onednn-opts", "info", "TensorFlow's oneDNN custom operations (TF_ENABLE_ONEDNN_OPTS)")
def onednn_opts(facts: Facts, compat):
    """On x86 Linux, TensorFlow >= 2.9 runs CPU operations through oneDNN by default and says so:
    ``oneDNN custom operations are on. You may see slightly different numerical results...``. That is
    informational. ``TF_ENABLE_ONEDNN_OPTS=0`` turns them off (bit-for-bit results like older releases,
    usually slower); ``1`` turns them on. Any other value is not read as a switch."""
    tf = _tf(facts, compat)
    if tf is None:
        return
    rules = _rules()
    on = rules.onednn
    machine = facts.target.machine
    if machine is not None and machine not in on.get("machines", ()):
        return
    var = on.get("variable", "TF_ENABLE_ONEDNN_OPTS")
    value = facts.env.get(var)
    try:
        default_on = Version(tf[1]).release[:2] >= Version(on.get("default_on_since", "2.9")).release[:2]
    except InvalidVersion:
        default_on = None
    low = value.strip().lower() if value is not None else None
    if value is None:
        state = ("on by default (small floating-point differences from older TensorFlow; "
                 f"{var}=0 gives the old numerics, more slowly)" if default_on else "off by default for this version")
    elif low in on.get("false_values", ()):
        state = "off: numerics like older TensorFlow, CPU ops usually slower"
    elif low in on.get("true_values", ()):
        state = "on: small floating-point differences from older TensorFlow"
    else:
        state = f"{value!r} is not 0/1/true/false: TensorFlow keeps its default"
    yield onednn_opts.spec.make(
        f"TensorFlow {tf[1]}: oneDNN custom operations are {state}.",
        {"distribution": tf[0], "version": tf[1], "variable": var, "value": value, "default_on": default_on},
        chain=[f"{tf[0]} {tf[1]} installed", f"{var}={value!r}" if value is not None else f"{var} unset"],
        hint=f"nothing to fix; set {var}=0 only for bit-reproducibility with older runs")


_INT = re.compile(r"^[ \t]*\+?([0-9]+)[ \t]*$")
_INT_MAX = 2**31 - 1


def _int_problem(text: str, minimum: int) -> tuple[str | None, int | None]:
    m = _INT.match(text)
    if not m:
        return "not a whole number", None
    value = int(m.group(1)) if len(m.group(1)) < 30 else _INT_MAX + 1
    if value > _INT_MAX:
        return "too large for the runtime (over 2^31-1)", None
    if value < minimum:
        return f"must be at least {minimum}", None
    return None, value


def _affinity_problem(rules: CpuRules, value: str) -> str | None:
    text = value.strip().lower()
    if not text:
        return "empty"
    # proclist=[0,1,2] holds commas: take it out first.
    text = re.sub(r"proclist=\[[0-9,\-\{\}\s]*\]", "proclist", text)
    types = 0
    for token in (t.strip() for t in text.split(",")):
        if token in rules.affinity_types:
            types += 1
        elif token in rules.affinity_modifiers or token == "proclist":
            continue
        elif token.startswith("granularity="):
            if token.split("=", 1)[1] not in rules.affinity_granularity:
                return f"unknown granularity {token.split('=', 1)[1]!r}"
        elif token.isdigit() and types:
            continue  # permute / offset after the type
        else:
            return f"unknown word {token[:40]!r}"
    return None if types <= 1 else "more than one affinity type"


@check("FDN207", "thread-env-invalid", "warning", "A thread-count variable is invalid or oversubscribes the CPU")
def thread_env_invalid(facts: Facts, compat):
    """``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``TF_NUM_INTRAOP_THREADS``, ``TF_NUM_INTEROP_THREADS`` and
    ``KMP_AFFINITY`` are read by the OpenMP runtimes, MKL and TensorFlow. A value they reject (not a whole
    number, zero or negative where a count is needed, too large, an unknown affinity word) is ignored with
    a warning or worse; a count above the CPUs this machine has oversubscribes the cores and makes every
    thread slower. Set counts to at most the number of cores (or 1 with many worker processes)."""
    rules = _rules()
    cpus = facts.cpu.cpu_count if facts.cpu is not None else None
    for var in rules.thread_vars:
        value = facts.env.get(var.name)
        if value is None:
            continue
        shown = value if len(value) <= 60 else value[:57] + "..."
        problem = count = None
        if var.kind == "kmp-affinity":
            problem = _affinity_problem(rules, value)
        elif var.kind == "int-list":
            parts = value.split(",")
            for part in parts:
                problem, level = _int_problem(part, var.min)
                if problem:
                    break
                count = level if count is None else count
        else:
            problem, count = _int_problem(value, var.min)
        if problem:
            yield thread_env_invalid.spec.make(
                f"{var.name}={shown!r} is not a value {var.read_by} accepts: {problem}.",
                {"variable": var.name, "value": value, "problem": problem, "cpu_count": cpus},
                chain=[f"{var.name} is read by {var.read_by}", f"{var.name}={shown!r}: {problem}"],
                hint=f"unset {var.name} or set it to a whole number between {max(var.min, 1)} and {cpus or 'the core count'}")
        elif count is not None and cpus is not None and count > cpus:
            yield thread_env_invalid.spec.make(
                f"{var.name}={count} asks for more threads than the {cpus} CPUs of this machine (oversubscription).",
                {"variable": var.name, "value": value, "problem": "oversubscribes", "threads": count, "cpu_count": cpus},
                chain=[f"{var.name}={count}", f"{cpus} CPUs online ({facts.cpu.cpu_count_source})"],
                hint=f"set {var.name} to at most {cpus}")
