"""cuDNN symptoms: missing, wrong version, off its pin, shadowed, incomplete, unreachable, colliding wheels.

Compatibility rule shared by TensorFlow/XLA, JAX and PyTorch: the runtime cuDNN must have the same major
as the build and a minor >= the build's; the patch level is ignored.
"""

from __future__ import annotations

from collections import defaultdict

from packaging.version import InvalidVersion, Version

from fixdnn.model.facts import Facts, Framework, LibraryCopy, LoadOutcome, Need
from fixdnn.symptoms.registry import check


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return Version(text).release
    except InvalidVersion:
        return None


def satisfies(copy_version: str | None, need: Need) -> bool | None:
    """True/False when the copy's version is known well enough to judge, None otherwise."""
    have = version_tuple(copy_version)
    if have is None:
        return None
    if have[0] != need.major:
        return False
    want = version_tuple(need.minimum)
    if want is None or len(want) < 2:
        return True
    if len(have) < 2:
        return None  # only the major is known
    return have[:2] >= want[:2]


def cudnn_needs(facts: Facts) -> list[tuple[Framework, Need, LoadOutcome | None]]:
    out = []
    for fw in facts.frameworks:
        if not fw.gpu_build:
            continue
        for need in fw.needs:
            if need.library == "cudnn":
                outcome = next((o for o in facts.loads_of(fw.name) if o.library == "cudnn"), None)
                out.append((fw, need, outcome))
    return out


def chain_of(outcome: LoadOutcome | None) -> tuple[str, ...]:
    if outcome is None:
        return ()
    return tuple(outcome.preload) + tuple(outcome.resolution.explain())


def _need_text(need: Need) -> str:
    return f"cuDNN {need.minimum}+ (major {need.major})" if need.minimum else f"cuDNN {need.major}.x"


def _usable_copies(facts: Facts, need: Need) -> list[LibraryCopy]:
    """Copies known to satisfy the need: a version fixdnn does not know never satisfies a minimum."""
    return [c for c in facts.copies("cudnn") if c.error is None and satisfies(c.version, need) is True]


def _copy_evidence(c: LibraryCopy | None) -> dict | None:
    if c is None:
        return None
    return {"path": c.path, "realpath": c.realpath, "version": c.version, "owner": c.owner, "found_in": list(c.found_in)}


@check("FDN101", "cudnn-missing", "error", "A framework needs cuDNN and no copy is reachable")
def cudnn_missing(facts: Facts, compat):
    """The framework was built against cuDNN N, and no file ``libcudnn.so.N`` can be found anywhere the
    framework's loader looks, nor anywhere else on disk. TensorFlow then reports "DNN library is not found",
    PyTorch ``libcudnn.so.9: cannot open shared object file``, JAX "Unable to load cuDNN"."""
    for fw, need, outcome in cudnn_needs(facts):
        if outcome is not None and outcome.path is not None:
            copy = facts.copy_at(outcome.path)
            if copy is None or copy.error is None:
                continue
            yield cudnn_missing.spec.make(
                f"{fw.name} {fw.version} would load {outcome.path}, which is not a usable library ({copy.error})",
                {"framework": fw.name, "needs": {"major": need.major, "minimum": need.minimum, "pin": need.pin},
                 "soname": outcome.soname, "broken_copy": _copy_evidence(copy)},
                chain=chain_of(outcome), hint="reinstall the cuDNN wheel the framework pins")
            continue
        if _usable_copies(facts, need):
            continue  # cudnn-not-on-search-path says it better
        others = [c for c in facts.copies("cudnn") if c.error is None]
        yield cudnn_missing.spec.make(
            f"{fw.name} {fw.version} needs {_need_text(need)} and no copy of libcudnn.so.{need.major} is reachable",
            {"framework": fw.name, "needs": {"major": need.major, "minimum": need.minimum, "pin": need.pin},
             "soname": f"libcudnn.so.{need.major}", "other_copies": [_copy_evidence(c) for c in others]},
            chain=chain_of(outcome),
            hint=f"install {need.pin}" if need.pin else f"install cuDNN {need.major} ({_need_text(need)})")


@check("FDN102", "cudnn-version-mismatch", "error", "The cuDNN that would load is too old or of another major")
def cudnn_version_mismatch(facts: Facts, compat):
    """The copy of cuDNN the framework would really load has another major version than the framework was
    built with, or a lower minor. TensorFlow/JAX say "Loaded runtime CuDNN library: X but source was compiled
    with: Y", PyTorch "cuDNN version incompatibility"."""
    for fw, need, outcome in cudnn_needs(facts):
        if outcome is None or outcome.path is None:
            continue
        copy = facts.copy_at(outcome.path)
        if copy is None or copy.error is not None or satisfies(copy.version, need) is not False:
            continue
        shadow = _shadow(facts, fw, need, outcome)
        shadow = shadow if shadow and shadow["expected_satisfies"] else None  # its own good copy is installed
        yield cudnn_version_mismatch.spec.make(
            f"{fw.name} {fw.version} needs {_need_text(need)} but would load cuDNN {copy.version} from {copy.path}"
            + (f", shadowing its own {shadow['expected']['path']} (via {shadow['via']})" if shadow else ""),
            {"framework": fw.name, "needs": {"major": need.major, "minimum": need.minimum, "pin": need.pin},
             "loaded": _copy_evidence(copy), "usable_copies": [_copy_evidence(c) for c in _usable_copies(facts, need)],
             # set when the framework's own satisfying copy is installed and only shadowed: the fix is to
             # remove the shadow, not to reinstall what is there (remedies check it)
             "shadowed_by": shadow["via"] if shadow else None, "entry": shadow["entry"] if shadow else None,
             "shadowing_dir": shadow["shadowing_dir"] if shadow else None},
            chain=chain_of(outcome) + (f"{copy.path}: cuDNN {copy.version} ({copy.version_source})",),
            hint=f"install {need.pin}" if need.pin else f"make a cuDNN {_need_text(need)} the first one found")


@check("FDN108", "cudnn-version-unknown", "warning", "The cuDNN that would load has a version fixdnn cannot read")
def cudnn_version_unknown(facts: Facts, compat):
    """The framework needs cuDNN of a minimum minor version (PyTorch: the one it was built with, TensorFlow
    and JAX: their build's), and the copy it would load says only its major: no header beside it, no wheel
    or conda record, a file name like ``libcudnn.so.9``, and loading it to call ``cudnnGetVersion()``
    failed. "9" does not satisfy "9.24 or newer": if the copy is older, PyTorch stops with ``cuDNN version
    incompatibility: PyTorch was compiled against (9, 24, 0) but found runtime version (9, 13, 0)``. Run the
    command shown to read the version by hand."""
    from fixdnn.facts.binversion import how_to_check

    for fw, need, outcome in cudnn_needs(facts):
        if outcome is None or outcome.path is None:
            continue
        copy = facts.copy_at(outcome.path)
        if copy is None or copy.error is not None or satisfies(copy.version, need) is not None:
            continue
        why = next((u.reason for u in facts.unknowns if u.what == f"version of {copy.path}"), None)
        yield cudnn_version_unknown.spec.make(
            f"{fw.name} {fw.version} needs {_need_text(need)}; the version of {copy.path} it would load is unknown",
            {"framework": fw.name, "needs": {"major": need.major, "minimum": need.minimum, "pin": need.pin},
             "loaded": _copy_evidence(copy), "why": why, "check": how_to_check(copy)},
            chain=chain_of(outcome) + (f"{copy.path}: version {copy.version or '?'} ({copy.version_source or 'no source'})",)
            + ((f"asking the file: {why}",) if why else ()),
            hint=f"read it with: {how_to_check(copy)}")


@check("FDN103", "cudnn-pin-mismatch", "warning", "The installed cuDNN wheel differs from the framework's exact pin")
def cudnn_pin_mismatch(facts: Facts, compat):
    """The framework declares an exact cuDNN wheel (``nvidia-cudnn-cu13==9.24.0.43``) and another version of
    that wheel is installed. It may work, but it is not the combination the framework was tested with."""
    for fw, need, outcome in cudnn_needs(facts):
        if not need.pin or "==" not in need.pin:
            continue
        shadow = _shadow(facts, fw, need, outcome) if outcome is not None and outcome.path else None
        if shadow and shadow["expected_satisfies"]:
            continue  # its own good copy is installed behind another install: that is cudnn-shadowed
        name, pinned = need.pin.split("==", 1)
        installs = [d for d in facts.distributions if d.name == name]
        if not installs or any(d.version == pinned for d in installs):
            continue  # the pinned one is installed; another install in front of it is cudnn-shadowed
        dist = installs[0]
        yield cudnn_pin_mismatch.spec.make(
            f"{fw.name} {fw.version} pins {need.pin} but {name} {dist.version} is installed",
            {"framework": fw.name, "distribution": name, "pinned": pinned, "installed": dist.version,
             "location": dist.location},
            chain=(f"{need.source}: {need.pin}", f"{dist.metadata_dir}: version {dist.version}"),
            hint=f"pip install {need.pin}")


def _expected_copy(facts: Facts, fw: Framework, need: Need, loaded: LibraryCopy) -> LibraryCopy | None:
    """The framework's own cuDNN, other than the one that loads: a copy owned by the wheel it depends on
    (any ``nvidia-cudnn-cu*`` when it names none), or the ``nvidia/cudnn/lib`` in the framework's own site
    directory (a second install of the same wheel earlier on sys.path, ``pip install --target DIR`` on
    PYTHONPATH, hides the site-packages one from the distribution list). One that satisfies the need first."""
    wheels = {need.pin.split("==", 1)[0]} if need.pin else set()
    wheels |= {need.wheel} if need.wheel else set()
    wheels = wheels or {d.name for d in facts.distributions if d.name.startswith("nvidia-cudnn-cu")}
    home = _home(facts, fw)

    def own(c: LibraryCopy) -> bool:
        if c.owner and c.owner.split(" ")[0].removeprefix("pip:") in wheels:
            return True
        return _at_home(c, home)

    owned = [c for c in facts.copies("cudnn") if own(c) and c.realpath != loaded.realpath and c.error is None
             and (version_tuple(c.version) or (0,))[0] == need.major]
    return next((c for c in owned if satisfies(c.version, need) is True), owned[0] if owned else None)


def _home(facts: Facts, fw: Framework) -> str | None:
    """``<site>/nvidia/cudnn/lib/`` beside the framework's own distribution."""
    dist = facts.distribution(fw.distribution)
    return f"{dist.location.rstrip('/')}/nvidia/cudnn/lib/" if dist is not None else None


def _at_home(c: LibraryCopy, home: str | None) -> bool:
    # realpath too: a RUNPATH answer keeps its spelling (``tensorflow/../nvidia/cudnn/lib``)
    return home is not None and any(p.startswith(home) for p in (c.path, c.realpath or "", *c.aliases))


def _place_of(outcome: LoadOutcome) -> str:
    if outcome.preload and outcome.resolution.source == "already-loaded":
        return outcome.preload[0]
    step = next((s for s in outcome.resolution.chain if s.outcome == "found"), None)
    return f"{step.source} {step.directory or ''}".strip() if step else (outcome.resolution.source or "?")


def _sys_path_entry(facts: Facts, copy: LibraryCopy) -> dict | None:
    """The sys.path entry that puts ``copy`` first (torch's and JAX's preload walk sys.path), with where
    the entry comes from: pythonpath | user-site | cwd | pth | site | stdlib."""
    for place in copy.found_in:
        if place.startswith("sys.path[") and "]" in place:
            index = int(place[len("sys.path["):place.index("]")])
            target = facts.target
            if index < len(target.sys_path):
                origin = target.sys_path_origins[index] if index < len(target.sys_path_origins) else "?"
                return {"index": index, "path": target.sys_path[index], "origin": origin}
    return None


def _shadow(facts: Facts, fw: Framework, need: Need, outcome: LoadOutcome) -> dict | None:
    """Evidence that another copy is loaded instead of the framework's own, or None."""
    loaded = facts.copy_at(outcome.path)
    if loaded is None:
        return None
    if _at_home(loaded, _home(facts, fw)) and satisfies(loaded.version, need) is True:
        # The copy beside the framework loads and fits (TensorFlow's RUNPATH reaches it whatever sys.path
        # holds): another cuDNN wheel earlier on sys.path, whose dist-info hides this one's, is unused here.
        return None
    expected = _expected_copy(facts, fw, need, loaded)
    if expected is None:
        return None
    via = _place_of(outcome)
    entry = _sys_path_entry(facts, loaded) if "sys.path" in via or "preload" in via else None
    return {"loaded": _copy_evidence(loaded), "expected": _copy_evidence(expected), "via": via,
            "shadowing_dir": loaded.path.rsplit("/", 1)[0], "expected_dir": expected.path.rsplit("/", 1)[0],
            "entry": entry, "expected_satisfies": satisfies(expected.version, need) is True}


@check("FDN104", "cudnn-shadowed", "warning", "Another cuDNN copy is picked instead of the one the framework pins")
def cudnn_shadowed(facts: Facts, compat):
    """The framework's own cuDNN wheel is installed, but a different copy comes first: from LD_PRELOAD
    (mapped before anything else), LD_LIBRARY_PATH, or a ``sys.path`` entry — torch preloads from the first
    entry holding ``nvidia/cudnn/lib`` — named with its origin: ``pythonpath`` (e.g. a ``pip install
    --target DIR`` wheel on PYTHONPATH), ``user-site``, ``cwd`` (the script's folder or the current
    directory) or ``pth`` (a ``.pth`` line that inserts in front). When the other copy is also too old,
    the framework fails ("cuDNN version incompatibility: PyTorch was compiled against (9, 24, 0) but found
    runtime version (9, 13, 0)"), and the fix is to remove the shadow, not to reinstall the pin."""
    for fw, need, outcome in cudnn_needs(facts):
        if outcome is None or outcome.path is None:
            continue
        shadow = _shadow(facts, fw, need, outcome)
        if shadow is None:
            continue
        loaded, expected = shadow["loaded"], shadow["expected"]
        entry = shadow["entry"]
        where = f" (sys.path[{entry['index']}] {entry['path']}, from {entry['origin']})" \
            if entry and "sys.path" not in shadow["via"] else ""
        yield cudnn_shadowed.spec.make(
            f"{fw.name} would load {loaded['path']} (cuDNN {loaded['version']}, via {shadow['via']}){where} "
            f"instead of {expected['path']} from {(expected['owner'] or 'its wheel').removeprefix('pip:')}",
            {"framework": fw.name, **shadow},
            chain=chain_of(outcome),
            hint=f"remove {entry['path'] if entry else shadow['shadowing_dir']} from the search path that reaches it")


def _damaged(outcome: LoadOutcome) -> bool:
    """The loader found a file by that name and refused it (file too short, invalid ELF header ...)."""
    return any(step.outcome == "invalid" for step in outcome.resolution.chain)


@check("FDN105", "cudnn-incomplete", "error", "cuDNN sub-libraries are missing, damaged or of mixed versions")
def cudnn_incomplete(facts: Facts, compat):
    """``libcudnn.so.N`` is only a shim: it ``dlopen()``s its sub-libraries (``libcudnn_graph``,
    ``libcudnn_cnn``, ...) lazily. A missing one aborts the process at first use ("Invalid handle. Cannot
    load symbol cudnnGetVersion", "Unable to load any of {libcudnn_cnn.so.9...}"); a damaged one (cut short
    by a full disk or an interrupted copy: "file too short") fails the same way and is named as damaged,
    with the loader's reason, not as missing; mixed versions make ``cudnnGetVersion`` report the graph
    library's version, not the shim's."""
    for fw, need, outcome in cudnn_needs(facts):
        if outcome is None or outcome.path is None:
            continue
        shim = facts.copy_at(outcome.path)
        required, _optional = compat.cudnn_sets.get(need.major, ((), ()))
        subs = [o for o in facts.loads_of(fw.name) if o.library.startswith("cudnn_")]
        absent = [o for o in subs if o.path is None and o.library in required]
        # A file that is there but cannot be mapped (cut short, not an ELF) is damaged, not missing.
        damaged = {o.soname: o.resolution.error for o in absent if _damaged(o)}
        missing = [o.soname for o in absent if o.soname not in damaged]
        versions: dict[str, list[str]] = defaultdict(list)
        for o in subs:
            copy = facts.copy_at(o.path)
            if copy is not None and copy.version:
                versions[copy.version].append(o.soname)
        if shim is not None and shim.version:
            versions[shim.version].append(outcome.soname)
        full = {v: names for v, names in versions.items() if (version_tuple(v) and len(version_tuple(v)) >= 2)}
        mixed = len(full) > 1
        if not missing and not mixed and not damaged:
            continue
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing))
        if damaged:
            parts.append("damaged " + "; ".join(damaged.values()))
        if mixed:
            parts.append("mixed versions " + ", ".join(sorted(full)))
        yield cudnn_incomplete.spec.make(
            f"the cuDNN at {outcome.path.rsplit('/', 1)[0]} is incomplete: " + "; ".join(parts),
            {"framework": fw.name, "shim": outcome.path, "missing": missing, "damaged": damaged,
             "versions": {v: sorted(n) for v, n in full.items()}},
            chain=tuple(f"{o.soname}: {o.path or 'not found'}" for o in subs),
            hint=f"reinstall the whole cuDNN {need.major} (e.g. {need.pin})" if need.pin
            else f"reinstall the whole cuDNN {need.major}, every sub-library from one release")


@check("FDN106", "cudnn-not-on-search-path", "error", "A usable cuDNN exists on disk but no search path reaches it")
def cudnn_not_on_search_path(facts: Facts, compat):
    """A copy of cuDNN that would satisfy the framework is on disk (a tarball in ``/opt``, a CUDA toolkit
    directory, another environment), but neither the framework's RPATH/RUNPATH, nor ``LD_LIBRARY_PATH``, nor
    the loader cache reaches it."""
    for fw, need, outcome in cudnn_needs(facts):
        if outcome is not None and outcome.path is not None:
            continue
        usable = _usable_copies(facts, need)
        if not usable:
            continue
        best = usable[0]
        yield cudnn_not_on_search_path.spec.make(
            f"{fw.name} {fw.version} cannot find libcudnn.so.{need.major}, but a usable copy is at {best.path}",
            {"framework": fw.name, "needs": {"major": need.major, "minimum": need.minimum, "pin": need.pin},
             "usable_copies": [_copy_evidence(c) for c in usable], "directory": best.path.rsplit("/", 1)[0]},
            chain=chain_of(outcome) + tuple(f"on disk: {c.path} (cuDNN {c.version}, {', '.join(c.found_in)})" for c in usable),
            hint=f"add {best.path.rsplit('/', 1)[0]} to the environment's library path, or install {need.pin or 'the pinned wheel'}")


@check("FDN107", "cudnn-wheel-collision", "warning", "cuDNN wheels for two CUDA majors share nvidia/cudnn/lib")
def cudnn_wheel_collision(facts: Facts, compat):
    """``nvidia-cudnn-cu12`` and ``nvidia-cudnn-cu13`` both install into ``nvidia/cudnn/lib``: whichever was
    installed last overwrote the other's files, and uninstalling either removes files the other needs."""
    by_location: dict[str, list] = defaultdict(list)
    for d in facts.distributions:
        if d.name.startswith("nvidia-cudnn-cu"):
            by_location[d.location].append(d)
    for location, dists in by_location.items():
        if len(dists) < 2:
            continue
        names = sorted(f"{d.name} {d.version}" for d in dists)
        yield cudnn_wheel_collision.spec.make(
            f"{' and '.join(names)} share {location}/nvidia/cudnn/lib",
            {"location": location, "distributions": [{"name": d.name, "version": d.version} for d in dists]},
            chain=tuple(f"{d.metadata_dir}" for d in dists),
            hint="keep only the cuDNN wheel of the CUDA major your frameworks use")
