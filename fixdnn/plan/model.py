"""Plans proven in the model: apply a remedy's effects to a copy of the facts, diagnose again. Pure.

An action's effects are known without running it:

* ``path-prepend`` / ``path-remove`` change a variable. For ``LD_LIBRARY_PATH`` and ``LD_PRELOAD`` every
  library load is then searched again over the places the loader would try (``LoadOutcome.search``, recorded
  by the facts stage) and the copies already known to be on disk; for ``PYTHONPATH`` the entry leaves
  ``sys.path`` (and torch's preload, which takes the first ``sys.path`` entry holding ``nvidia/<lib>/lib``,
  is redone); ``PYTHONNOUSERSITE=1`` takes the user site out of ``sys.path``;
* ``pip-install`` puts a known wheel's files at known paths: an nvidia cuDNN / CUDA wheel lays out
  ``nvidia/<lib>/lib/lib<name>.so.<major>`` in the site directory (the libraries of
  ``rules/compat/libraries.toml``), replaces the files of an installed version, and any reinstalled
  distribution is intact afterwards. ``name[extra]==v`` installs the extra's exact pins of the installed
  ``name``. A pin that is already installed changes nothing without ``--force-reinstall`` (pip says
  "Requirement already satisfied" and repairs no files, even missing ones);
* ``pip-uninstall`` removes a distribution and the library files it owns;
* the GPU side: after an ``LD_LIBRARY_PATH`` change ``libcuda.so.1`` is looked up again among the copies the
  facts saw; a torch CUDA variant (``torch==2.14.1+cu130``) carries the architectures of its build
  (``[[torch_build]]`` in ``rules/compat/gpu.toml``) and its CUDA version;
* ``preload`` (the in-process copy of an env step, for processes that never ran the activation scripts)
  changes nothing the facts see: they model an activated shell, where the paired env step acts.

Only what changed is re-derived (a load whose modelled answer is the same before and after keeps the
facts' own answer, with its full chain). ``manual`` and ``write-file`` steps cannot be modelled: they are
never "proven", and the plan says why.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, replace

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from fixdnn.model.actions import Action
from fixdnn.model.facts import (Distribution, Facts, InstallCheck, KernelImages, LibCuda, LibraryCopy, LoaderStep,
                                LoadOutcome, PathEntry, Resolution)

# Folder of each family inside an nvidia wheel (as the facts stage and torch's preload name them).
_WHEEL_FOLDER = {"cudnn": "cudnn", "cublas": "cublas", "cublasLt": "cublas", "cudart": "cuda_runtime",
                 "nvrtc": "cuda_nvrtc"}


class Unmodelled(Exception):
    """An action whose effects the model does not know: the remedy cannot be proven."""


@dataclass(frozen=True)
class Proof:
    proven: bool
    reason: str  # one line: what the model showed
    removes: tuple[str, ...] = ()  # symptoms (name (subject)) gone after the step
    new_errors: tuple[str, ...] = ()


def symptom_key(s) -> tuple:
    """What one symptom is about: its name and subject (framework, variable and entry, distribution)."""
    ev = s.evidence or {}
    entry = ev.get("entry")
    if isinstance(entry, dict):  # an import-path entry: {"index", "path", "origin"}
        entry = entry.get("path")
    return (s.name, ev.get("framework"), ev.get("variable"), entry, ev.get("distribution"))


def label(s) -> str:
    subject = [str(v) for v in symptom_key(s)[1:] if v not in (None, "")]
    return s.name + (f" ({', '.join(subject)})" if subject else "")


# -- the loader, over known copies ---------------------------------------------------------------------
def _copy_index(facts: Facts) -> dict[str, LibraryCopy]:
    out: dict[str, LibraryCopy] = {}
    for c in facts.libraries:
        for p in (c.path, c.realpath, *c.aliases):
            out.setdefault(p, c)
            out.setdefault(posixpath.normpath(p), c)
    return out


def _ld_dirs(facts: Facts) -> list[str]:
    return [d.rstrip("/") or "/" for d in re.split("[:;]", facts.env.get("LD_LIBRARY_PATH") or "")
            if d.startswith("/")]


def _preload_list(facts: Facts) -> list[str]:
    return [p for p in re.split(r"[: ]", facts.env.get("LD_PRELOAD") or "") if p.startswith("/")]


def _with_ld(search: tuple[LoaderStep, ...], ld: list[str]) -> list[tuple[str, str]]:
    """The recorded search order with its LD_LIBRARY_PATH part replaced by ``ld``."""
    out: list[tuple[str, str]] = []
    placed = False
    for step in search:
        if step.source == "LD_LIBRARY_PATH":
            if not placed:
                out += [("LD_LIBRARY_PATH", d) for d in ld]
                placed = True
            continue
        if not placed and step.source not in ("DT_RPATH",):
            out += [("LD_LIBRARY_PATH", d) for d in ld]
            placed = True
        out.append((step.source, step.directory or ""))
    if not placed:
        out += [("LD_LIBRARY_PATH", d) for d in ld]
    return out


def _walk(order: list[tuple[str, str]], soname: str, index: dict[str, LibraryCopy]) -> tuple | None:
    for source, where in order:
        cand = where if source == "ld.so.cache" else f"{where.rstrip('/')}/{soname}"
        copy = index.get(cand)
        if copy is None:  # a RUNPATH such as $ORIGIN/../nvidia/cudnn/lib (no symlinked folders assumed)
            copy = index.get(posixpath.normpath(cand))
            cand = copy.path if copy is not None else cand
        if copy is None:
            continue
        if copy.error is not None:  # a broken file is fatal for the loader, even with a good copy later
            return (None, source, f"{cand}: {copy.error}", where)
        return (cand, source, None, where)
    return None


def _by_dir(index: dict[str, LibraryCopy]) -> dict[str, list[str]]:
    """{directory: [file names]} of the known copies (torch's preload lists one folder per sys.path entry)."""
    out: dict[str, list[str]] = {}
    for path in index:
        head, _, name = path.rpartition("/")
        out.setdefault(head, []).append(name)
    return out


def _python_preload(facts: Facts, outcome: LoadOutcome, folders: dict[str, list[str]]) -> str | None:
    """torch: the first sys.path entry holding nvidia/<folder>/lib/lib<family>.so.*; None when no entry
    has one or the first one found answers another SONAME (then the loader still searches)."""
    if not any(n.startswith(("torch preload", "JAX plugin")) for n in outcome.preload):
        return None
    family = outcome.library
    folder = _WHEEL_FOLDER.get(family, family)
    stem = f"lib{family}.so."
    for entry in facts.target.sys_path:
        lib = f"{entry.rstrip('/')}/nvidia/{folder}/lib"
        found = [n for n in folders.get(lib, ()) if n.startswith(stem) and n[-1:].isdigit()]
        if found:
            return f"{lib}/{outcome.soname}" if outcome.soname in found else None
    return None


_MODELLED: dict[int, tuple[Facts, dict]] = {}  # the last few answers, by facts object (planning asks twice)


def model_loads(facts: Facts, compat) -> dict[tuple[str, str], tuple]:
    """{(framework, library): (path, source, error, where)} as the model sees it."""
    hit = _MODELLED.get(id(facts))
    if hit is not None and hit[0] is facts:
        return hit[1]
    out = _model_loads(facts, compat)
    if len(_MODELLED) > 16:
        _MODELLED.clear()
    _MODELLED[id(facts)] = (facts, out)
    return out


def _model_loads(facts: Facts, compat) -> dict[tuple[str, str], tuple]:
    index = _copy_index(facts)
    folders = _by_dir(index)
    ld = _ld_dirs(facts)
    preloads = _preload_list(facts)
    out: dict[tuple[str, str], tuple] = {}
    for o in facts.loads:
        if o.library.startswith("cudnn_"):
            continue
        got = None
        for p in preloads:
            copy = index.get(p)
            if copy is not None and (copy.soname == o.soname or p.rsplit("/", 1)[-1] == o.soname):
                got = (p, "LD_PRELOAD", None, p)
                break
        if got is None:
            pre = _python_preload(facts, o, folders)
            got = (pre, "already-loaded", None, pre) if pre else None
        order = _with_ld(o.search, ld)
        if got is None:
            got = _walk(order, o.soname, index) or (None, None, f"{o.soname}: not found", None)
        out[(o.framework, o.library)] = got
        if o.library != "cudnn" or got[0] is None:
            continue
        major = o.soname.rsplit(".", 1)[-1]
        required, optional = compat.cudnn_sets.get(int(major), ((), ())) if major.isdigit() else ((), ())
        shim_dir = posixpath.dirname(got[0])
        base = [(s, d) for s, d in order if s != "ld.so.cache"]
        for sub in required + optional:
            if sub == "cudnn":
                continue
            soname = f"lib{sub}.so.{major}"
            recorded = next((x for x in facts.loads if x.framework == o.framework and x.library == sub), None)
            if recorded is not None and recorded.search and recorded.preload == (f"dlopen()ed by {got[0]}",):
                sub_order = _with_ld(recorded.search, ld)
            else:  # a shim the facts never saw loaded: cuDNN looks next to itself first ($ORIGIN)
                sub_order = [("DT_RPATH", shim_dir)] + base
            hit = _walk(sub_order, soname, index)
            if hit is not None or sub in required:
                out[(o.framework, sub)] = hit or (None, None, f"{soname}: not found", None)
    return out


def _relink(before: Facts, after: Facts, compat, what: str) -> Facts:
    """Re-derive the loads that the change moved; the others keep the facts' own answer."""
    old, new = model_loads(before, compat), model_loads(after, compat)
    recorded = {(o.framework, o.library): o for o in after.loads}
    loads: list[LoadOutcome] = []
    done = set()
    keys = list(recorded) + [k for k in new if k not in recorded]
    for key in keys:
        if key in done:
            continue
        done.add(key)
        o = recorded.get(key)
        if old.get(key) == new.get(key) and o is not None:
            loads.append(o)
            continue
        if key not in new:
            continue  # a sub-library nobody dlopen()s any more
        path, source, error, where = new[key]
        fw, library = key
        major = (o.soname if o else "").rsplit(".", 1)[-1] if o else None
        if o is None:
            shim = new.get((fw, "cudnn"), (None,))[0]
            major = (shim or "").rsplit(".", 1)[-1]
            soname = f"lib{library}.so.{major}"
            preload: tuple[str, ...] = (f"dlopen()ed by {shim}",)
            search: tuple[LoaderStep, ...] = ()
            requester = shim
        else:
            soname, preload, search, requester = o.soname, o.preload, o.search, o.resolution.requester
            if library.startswith("cudnn_"):
                preload = (f"dlopen()ed by {new.get((fw, 'cudnn'), (None,))[0]}",)
        step = LoaderStep(source or "model", where, "found" if path else "absent", f"in the model, after {what}")
        res = Resolution(soname, requester, path, source, (step,), None if path else (error or "not found"))
        loads.append(LoadOutcome(fw, library, soname, path, res, preload, search))
    return replace(after, loads=tuple(loads))


# -- effects of one action -----------------------------------------------------------------------------
def _set_env(facts: Facts, name: str, value: str | None) -> Facts:
    env = dict(facts.env)
    if value is None or value == "":
        env.pop(name, None)
    else:
        env[name] = value
    return replace(facts, env=env)


def _path_entries(facts: Facts, variable: str, values: list[str], known: dict[str, bool]) -> Facts:
    if facts.cpu is None:
        return facts
    old = {e.raw: e for e in facts.cpu.search_path if e.variable == variable}
    entries = []
    for i, raw in enumerate(values):
        e = old.get(raw)
        if e is None:
            is_dir = known.get(raw, False)
            e = PathEntry(variable, i, raw, "absolute" if raw.startswith("/") else "relative", is_dir, is_dir, raw)
        entries.append(replace(e, index=i))
    others = tuple(e for e in facts.cpu.search_path if e.variable != variable)
    return replace(facts, cpu=replace(facts.cpu, search_path=others + tuple(entries)))


def _dirs_with_copies(facts: Facts) -> set[str]:
    return {posixpath.dirname(p) for c in facts.libraries for p in (c.path, c.realpath, *c.aliases)} | \
        {posixpath.dirname(c.path) for c in _libcudas(facts)}


# -- the GPU side: which libcuda.so.1 loads, which kernels a torch variant carries ---------------------------
def _libcudas(facts: Facts) -> list[LibCuda]:
    gpu = facts.gpu
    return ([gpu.libcuda] if gpu and gpu.libcuda else []) + list(gpu.libcuda_copies if gpu else ())


def _libcuda_after(facts: Facts) -> Facts:
    """libcuda.so.1 after an LD_LIBRARY_PATH change: the first known copy in an LD_LIBRARY_PATH directory,
    else the first one the loader reaches on its own (the loader cache, the default directories)."""
    copies = _libcudas(facts)
    if not copies:
        return facts
    picked = None
    for d in _ld_dirs(facts):
        picked = next((c for c in copies if posixpath.dirname(c.path) == d), None)
        if picked is not None:
            picked = replace(picked, found_in=f"LD_LIBRARY_PATH {d} (in the model)")
            break
    if picked is None:
        picked = next((c for c in copies if not (c.found_in or "").startswith(("LD_LIBRARY_PATH", "WSL2",
                                                                                  "cuda-compat"))), None)
    others = tuple(c for c in copies if picked is None or c.realpath != picked.realpath)
    return replace(facts, gpu=replace(facts.gpu, libcuda=picked, libcuda_copies=others))


def _torch_variant(facts: Facts, version: str, compat) -> Facts:
    """A torch CUDA variant (``2.14.1+cu130``) carries its build's architectures (rules/compat/gpu.toml)."""
    tables = compat.gpu
    local = version.partition("+")[2]
    build = next((b for b in tables.torch_builds if b.local == local), None) if tables and local else None
    if facts.gpu is None or build is None:
        raise Unmodelled(f"the kernels of torch=={version} are not in rules/compat/gpu.toml")
    kernels = tuple(replace(k, version=version, libraries=(KernelImages("(modelled)", build.sass, build.ptx,
                                                                          entries=1, containers=1),))
                    if k.framework == "torch" else k for k in facts.gpu.kernels)
    fws = tuple(replace(f, version=version, cuda=build.cuda) if f.name == "torch" else f for f in facts.frameworks)
    return replace(facts, frameworks=fws, gpu=replace(facts.gpu, kernels=kernels))


def _path_change(facts: Facts, a: Action) -> Facts:
    name, value = a.name or "", (a.value or "").rstrip("/") or "/"
    sep = " " if name == "LD_PRELOAD" and " " in (facts.env.get(name) or "") else ":"
    parts = [p for p in re.split("[: ]" if name == "LD_PRELOAD" else ":", facts.env.get(name) or "") if p]
    if a.kind == "path-remove":
        parts = [p for p in parts if (p.rstrip("/") or "/") != value]
    else:
        if name == "LD_LIBRARY_PATH" and value not in _dirs_with_copies(facts):
            raise Unmodelled(f"nothing is known about {value} (no library the facts saw lives there)")
        parts = [value] + [p for p in parts if (p.rstrip("/") or "/") != value]
    after = _set_env(facts, name, sep.join(parts))
    if name in ("LD_LIBRARY_PATH", "LD_PRELOAD"):
        known = {d: True for d in _dirs_with_copies(facts)} if name == "LD_LIBRARY_PATH" else \
            {p: True for c in facts.libraries for p in (c.path, *c.aliases)}
        after = _path_entries(after, name, parts, known)
        if name == "LD_LIBRARY_PATH" and after.gpu is not None:
            after = _libcuda_after(after)
    if name == "PYTHONPATH" and a.kind == "path-remove":
        after = _drop_sys_path(after, lambda entry, origin: origin == "pythonpath"
                               and (entry.rstrip("/") or "/") == value)
    elif name == "PYTHONPATH":
        raise Unmodelled("adding a PYTHONPATH entry (its packages are not in the facts)")
    return after


def _drop_sys_path(facts: Facts, drop) -> Facts:
    t = facts.target
    origins = t.sys_path_origins + ("?",) * (len(t.sys_path) - len(t.sys_path_origins))
    keep = [(e, o) for e, o in zip(t.sys_path, origins) if not drop(e, o)]
    target = replace(t, sys_path=tuple(e for e, _ in keep), sys_path_origins=tuple(o for _, o in keep))
    visible = set(target.sys_path) | set(target.site_dirs)
    dists = tuple(d for d in facts.distributions if d.location in visible)
    return replace(facts, target=target, distributions=dists)


def _env_change(facts: Facts, a: Action) -> Facts:
    name = a.name or ""
    if name == "PYTHONNOUSERSITE":
        if a.kind == "env-set" and (a.value or "") not in ("", "0"):
            after = _drop_sys_path(facts, lambda entry, origin: origin == "user-site")
            return _set_env(replace(after, target=replace(after.target, user_site_enabled=False)), name, a.value)
        raise Unmodelled("turning the user site back on (its packages are not in the facts)")
    if name in ("LD_LIBRARY_PATH", "LD_PRELOAD", "PYTHONPATH"):
        raise Unmodelled(f"replacing {name} as a whole (use path-prepend / path-remove)")
    return _set_env(facts, name, a.value if a.kind == "env-set" else None)


def _site(facts: Facts) -> str | None:
    fw_dists = {f.distribution for f in facts.frameworks}
    for d in facts.distributions:
        if d.name in fw_dists:
            return d.location
    return facts.target.site_dirs[0] if facts.target.site_dirs else None


def _wheel_libs(name: str, version: str, compat) -> list[tuple[str, str]]:
    """[(relative folder, file name)] an nvidia wheel installs, from the compat tables; [] if unknown."""
    m = re.fullmatch(r"nvidia-cudnn-cu(\d+)", name)
    if m:
        major = int(version.split(".")[0]) if version.split(".")[0].isdigit() else None
        required, optional = compat.cudnn_sets.get(major, ((), ())) if major else ((), ())
        return [("nvidia/cudnn/lib", f"lib{f}.so.{major}") for f in required + optional]
    out = []
    for cuda_major, families in compat.cuda_libs.items():
        for family, so_major in families.items():
            try:
                wheel = compat.wheel_for(family, cuda_major)
            except Exception:
                continue
            if wheel == name:
                unsuffixed = not re.search(r"-cu\d+$", wheel)
                folder = f"nvidia/cu{cuda_major}/lib" if unsuffixed else f"nvidia/{_WHEEL_FOLDER.get(family, family)}/lib"
                out.append((folder, f"lib{family}.so.{so_major}"))
    return out


def _install_one(facts: Facts, name: str, version: str, force: bool, compat) -> tuple[Facts, bool]:
    """(facts after, whether pip would change anything)."""
    name = canonicalize_name(name)
    old = facts.distribution(name)
    if old is not None and old.version == version and not force:
        return facts, False  # "Requirement already satisfied": pip repairs no files without --force-reinstall
    site = old.location if old is not None else _site(facts)
    if site is None:
        raise Unmodelled("no site directory is known to install into")
    dist = Distribution(name, name, version, site, f"{site}/{name.replace('-', '_')}-{version}.dist-info",
                        old.requires if old is not None and old.version == version else (), "pip")
    dists = tuple(d for d in facts.distributions if d.name != name) + (dist,)
    owner = f"pip:{name} {version}"
    libs = [c for c in facts.libraries if not (c.owner and c.owner.split(" ")[0] == f"pip:{name}")]
    short = ".".join(version.split("+")[0].split(".")[:3])
    index = next((f"sys.path[{i}]" for i, e in enumerate(facts.target.sys_path) if e == site), "site")
    taken = {p for c in libs for p in (c.path, c.realpath, *c.aliases)}
    for folder, fname in _wheel_libs(name, version, compat):
        path = f"{site}/{folder}/{fname}"
        libs = [c for c in libs if path not in (c.path, c.realpath, *c.aliases)] if path in taken else libs
        family = fname[3:].split(".so", 1)[0]
        libs.append(LibraryCopy(family, path, path, fname, short, f"distribution {name} {version} (modelled)",
                                owner, (index,)))
    checks = tuple(c for c in facts.integrity if c.distribution != name)
    if any(c.distribution == name for c in facts.integrity):
        checks += (InstallCheck(name, version, "pip", dist.metadata_dir),)
    after = replace(facts, distributions=dists, libraries=tuple(libs), integrity=checks)
    if name == "torch" and facts.gpu is not None and facts.gpu.kernels:
        after = _torch_variant(after, version, compat)
    return after, True


def _extra_pins(facts: Facts, dist_name: str, extra: str) -> list[tuple[str, str]]:
    dist = facts.distribution(canonicalize_name(dist_name))
    out = []
    for line in dist.requires if dist else ():
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is None or not req.marker.evaluate({"extra": extra, "sys_platform": "linux",
                                                          "platform_system": "Linux"}):
            continue
        if req.marker.evaluate({"extra": "", "sys_platform": "linux", "platform_system": "Linux"}):
            continue  # not behind the extra: already installed with the distribution
        pins = [s.version for s in req.specifier if s.operator == "=="]
        if len(pins) == 1:
            out.append((req.name, pins[0]))
    return out


def _pip_install(facts: Facts, a: Action, compat) -> Facts:
    force = "--force-reinstall" in a.pip_args
    changed = False
    for pin in a.packages:
        req = Requirement(pin)
        version = pin.split("==", 1)[1]
        pins = [(req.name, version)]
        if req.extras:
            dist = facts.distribution(canonicalize_name(req.name))
            if dist is None or dist.version != version:
                raise Unmodelled(f"{pin}: the extra's pins of another {req.name} version are not in the facts")
            pins = [(req.name, version)] + [p for e in sorted(req.extras) for p in _extra_pins(facts, req.name, e)]
        for name, ver in pins:
            facts, did = _install_one(facts, name, ver, force, compat)
            changed = changed or did
    if not changed:
        raise AlreadyInstalled(f"pip would change nothing: {' '.join(a.packages)} is already installed "
                               "(without --force-reinstall pip leaves its files as they are)")
    return facts


class AlreadyInstalled(Unmodelled):
    """The step would change nothing: what it installs is already installed (pip repairs nothing then)."""


def _pip_uninstall(facts: Facts, a: Action) -> Facts:
    names = {canonicalize_name(p) for p in a.packages}
    dists = tuple(d for d in facts.distributions if d.name not in names)
    libs = tuple(c for c in facts.libraries
                 if not (c.owner and c.owner.startswith("pip:") and canonicalize_name(c.owner[4:].split(" ")[0]) in names))
    checks = tuple(c for c in facts.integrity if c.distribution not in names)
    return replace(facts, distributions=dists, libraries=libs, integrity=checks)


def apply_action(facts: Facts, a: Action, compat) -> Facts:
    """The facts as they would be after ``a``; Unmodelled when its effects are not known."""
    if a.kind == "manual":
        raise Unmodelled("a manual step: fixdnn does not carry it out")
    if a.kind == "write-file":
        raise Unmodelled(f"writes {a.path}, which no fact is read from")
    if a.kind == "preload":  # the same copy for processes that never ran the activation scripts; the
        return facts         # facts already model an activated shell, where the paired env step acts
    if a.kind in ("path-prepend", "path-remove"):
        after = _path_change(facts, a)
    elif a.kind in ("env-set", "env-unset"):
        after = _env_change(facts, a)
    elif a.kind == "pip-install":
        after = _pip_install(facts, a, compat)
    elif a.kind == "pip-uninstall":
        after = _pip_uninstall(facts, a)
    else:  # pragma: no cover - Action rejects unknown kinds
        raise Unmodelled(a.kind)
    return _relink(facts, after, compat, a.describe())


def prove(facts: Facts, before, actions: list[Action], targets: list, compat, diagnose) -> tuple[Proof, Facts, tuple]:
    """Apply ``actions`` to ``facts`` and diagnose again (``diagnose(facts, compat)``): proven when every
    symptom of ``targets`` is gone and no error appears that ``before`` did not have."""
    after_facts = facts
    try:
        for a in actions:
            after_facts = apply_action(after_facts, a, compat)
    except Unmodelled as exc:
        return Proof(False, f"not modelled: {exc}" if not isinstance(exc, AlreadyInstalled) else str(exc)), facts, before
    after = tuple(diagnose(after_facts, compat))
    after_keys = {symptom_key(s) for s in after}
    before_keys = {symptom_key(s) for s in before}
    remain = [label(t) for t in targets if symptom_key(t) in after_keys]
    new = [label(s) for s in after if s.severity == "error" and symptom_key(s) not in before_keys]
    removes = tuple(label(s) for s in before if symptom_key(s) not in after_keys)
    if remain or new:
        parts = []
        if remain:
            parts.append("still " + ", ".join(dict.fromkeys(remain)))
        if new:
            parts.append("new error " + ", ".join(dict.fromkeys(new)))
        return Proof(False, "in the model: " + "; ".join(parts), removes, tuple(new)), after_facts, after
    return Proof(True, "in the model: removes " + ", ".join(removes), removes), after_facts, after


__all__ = ["AlreadyInstalled", "Proof", "Unmodelled", "apply_action", "label", "model_loads", "prove", "symptom_key"]
