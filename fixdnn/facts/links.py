"""Symbol-level checks of the bindings between the DNN / CUDA libraries that would load.

The loader model says which file each library resolves to; that is not enough when two wheels of
different releases meet: ``libcusparse.so.12`` from CUDA 12.9 needs ``__nvJitLinkGetErrorLogSize_12_9``
from ``libnvJitLink.so.12``, and an older nvJitLink wheel has the same SONAME without that symbol.
The process then dies at load with ``undefined symbol: ..., version libnvJitLink.so.12``. Starting from
every library a framework would load, each DT_NEEDED edge to another DNN / CUDA library is resolved with
the loader model and checked the way glibc checks it (:mod:`fixdnn.facts.elfsyms`).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import replace

from fixdnn.base.filecache import FileCache
from fixdnn.facts import elfsyms
from fixdnn.facts.distributions import library_owners
from fixdnn.facts.elf import read_elf
from fixdnn.facts.loader import LoaderEnv, resolve
from fixdnn.model.facts import Distribution, Framework, LinkCheck, LoadOutcome
from fixdnn.target.host import Host, file_identity

# The libraries of the CUDA toolkit wheels and cuDNN (libcudnn*, libcublas*, libcusparse*, libnvJitLink*, ...).
_DNN_LIBRARY = re.compile(r"^lib(cu[a-zA-Z]*|nv[a-zA-Z]+|cudnn[a-z_]*)\.so(\.\d+)*$")
_MAX_DEPTH = 4
SHOWN_SYMBOLS = 5


def is_dnn_library(soname: str) -> bool:
    # libcuda.so.1 is the driver: bound to whatever the machine has, not a wheel of the environment.
    return bool(_DNN_LIBRARY.match(soname)) and not soname.startswith("libcuda.so")


CACHE_NAME = "links-cache.json"
CACHE_SCHEMA = "fixdnn.links-cache/2"


def cached_binding(host: Host, requester: str, soname: str, provider: str, cache: FileCache | None) -> LinkCheck:
    """:func:`check_binding`, answered from ``cache`` while neither file changed."""
    if cache is None:
        return check_binding(host, requester, soname, provider)

    def idents():
        a, b = file_identity(host, requester), file_identity(host, provider)
        return a + b if a and b else None

    return cache.remember(f"{requester}\0{soname}\0{provider}", idents,
                          lambda: check_binding(host, requester, soname, provider), LinkCheck,
                          keep=lambda found: found.unknown is None)


def check_binding(host: Host, requester: str, soname: str, provider: str) -> LinkCheck:
    needs = elfsyms.version_needs(host, requester, soname)
    if needs is None:
        return LinkCheck(requester, soname, provider, unknown=f"cannot read the symbol versions of {requester}")
    if not needs.versions:
        return LinkCheck(requester, soname, provider)
    defined = elfsyms.version_defs(host, provider)
    if defined is None:
        return LinkCheck(requester, soname, provider, unknown=f"cannot read the symbol versions of {provider}")
    if defined == ():
        return LinkCheck(requester, soname, provider)  # an unversioned provider: glibc accepts it
    missing_versions = tuple(v for v, weak in needs.versions if not weak and v not in defined)
    if missing_versions:
        return LinkCheck(requester, soname, provider, missing_versions=missing_versions)
    answers = elfsyms.defines(host, provider, list(needs.symbols))
    if answers is None:
        return LinkCheck(requester, soname, provider, unknown=f"cannot look up symbols in {provider}")
    # In the order ld.so binds them, so the first one is the one its error names.
    absent = [key for key, ok in answers.items() if not ok]
    used = elfsyms.first_uses(host, requester, {k: needs.indexes[k] for k in absent if k in needs.indexes}) \
        if absent else {}
    first = sorted(absent, key=lambda key: (used.get(key, 1 << 62), key))
    missing = [f"{name}@{version}" for name, version in first]
    return LinkCheck(requester, soname, provider, missing_symbols=tuple(missing[:SHOWN_SYMBOLS]),
                     missing_count=len(missing))


def _path_preloads(host: Host, fw: Framework, sys_path: tuple[str, ...], compat) -> list[str]:
    """The files a framework loads by full path from the nvidia wheels (JAX's CUDA plugin: the first
    sys.path entry holding ``nvidia/<module>``, as ``nvidia.<module>.__path__[0]`` resolves)."""
    if fw.name != "jax" or compat is None or not fw.cuda:
        return []
    out = []
    for module, filename in compat.jax_preloads.get(int(fw.cuda.split(".")[0]), ()):
        for entry in sys_path:
            package = f"{entry.rstrip('/')}/nvidia/{module}"
            if host.is_dir(package):
                if host.exists(f"{package}/lib/{filename}"):
                    out.append(f"{package}/lib/{filename}")
                break
    return out


def gather(host: Host, frameworks: tuple[Framework, ...], outcomes: tuple[LoadOutcome, ...], env: LoaderEnv,
           distributions: tuple[Distribution, ...] = (), cache: FileCache | None = None, *,
           sys_path: tuple[str, ...] = (), compat=None) -> tuple[LinkCheck, ...]:
    """Every edge between DNN / CUDA libraries reachable from what each framework would load (its own
    library that asks for them, the files it loads by full path, and each library the loader model
    resolved), checked once."""
    checks: dict[tuple[str, str], LinkCheck] = {}  # (real path of the requester, soname) -> check
    users: dict[tuple[str, str], set[str]] = {}
    for fw in frameworks:
        if not fw.gpu_build:
            continue
        by_path = _path_preloads(host, fw, sys_path, compat)
        mine = [o for o in outcomes if o.framework == fw.name and o.path]
        # In the order the process maps them; what is mapped already answers later requests by SONAME.
        loaded = {read_elf(host, p).soname or p.rsplit("/", 1)[-1]: p for p in by_path}
        loaded.update({o.soname: o.path for o in mine})
        fw_env = replace(env, preloaded={**env.preloaded, **loaded})
        todo = deque((p, 0) for p in ([fw.loaded_by] if fw.loaded_by else []) + by_path + [o.path for o in mine])
        seen: set[str] = set()
        while todo:
            path, depth = todo.popleft()
            real = host.realpath(path)
            if real in seen or depth > _MAX_DEPTH:
                continue
            seen.add(real)
            elf = read_elf(host, path)
            if not elf.ok:
                continue
            for soname in elf.needed:
                if not is_dnn_library(soname):
                    continue
                key = (real, soname)
                users.setdefault(key, set()).add(fw.name)
                if key not in checks:
                    res = resolve(host, soname, [elf], fw_env)
                    checks[key] = (cached_binding(host, path, soname, res.path, cache) if res.path
                                   else LinkCheck(path, soname, None))
                if checks[key].provider:
                    todo.append((checks[key].provider, depth + 1))
    found = [replace(c, frameworks=tuple(sorted(users[k]))) for k, c in checks.items()]
    return tuple(_with_owners(host, found, distributions))


def _with_owners(host: Host, checks: list[LinkCheck], distributions) -> list[LinkCheck]:
    """Name the distributions on both sides of a broken binding (RECORDs are read only then)."""
    broken = [c for c in checks if c.broken]
    if not broken:
        return checks
    names = {p.rsplit("/", 1)[-1] for c in broken for p in (c.requester, c.provider) if p}
    names |= {host.realpath(p).rsplit("/", 1)[-1] for c in broken for p in (c.requester, c.provider) if p}
    owners, _unknown = library_owners(host, distributions, lambda name: name in names)

    def owner(path: str | None) -> str | None:
        dist = owners.get(path) or owners.get(host.realpath(path)) if path else None
        return f"{dist.name} {dist.version}" if dist else None

    return [replace(c, requester_owner=owner(c.requester), provider_owner=owner(c.provider)) if c.broken else c
            for c in checks]
