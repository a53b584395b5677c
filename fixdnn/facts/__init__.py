"""gather(host, spec) -> Facts: every read-only probe, in one place, in dependency order."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the model imports fixdnn.facts.loader, which imports fixdnn.facts.elf: keep this package light
    from fixdnn.knowledge.compat import Compat
    from fixdnn.model.facts import Facts

# Environment variables that change what a DNN process loads or how it behaves.
_ENV_NAMES = {
    "LD_LIBRARY_PATH", "LD_PRELOAD", "CUDA_HOME", "CUDA_PATH", "CUDNN_PATH", "CONDA_PREFIX", "VIRTUAL_ENV",
    "PYTHONPATH", "PYTHONNOUSERSITE", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "CUDA_MODULE_LOADING",
    "OMP_NUM_THREADS", "OMP_PROC_BIND", "OMP_PLACES",
}
_ENV_PREFIXES = ("KMP_", "MKL_", "TF_", "XLA_", "JAX_", "PYTORCH_", "TORCH_", "CUDNN_", "ONEDNN_", "DNNL_", "MKLDNN_")


def relevant_env(environ) -> dict[str, str]:
    return {k: v for k, v in sorted(environ.items()) if k in _ENV_NAMES or k.startswith(_ENV_PREFIXES)}


def gather(host, spec, compat: Compat | None = None, *, verify_all: bool = False, lock: str | None = None,
           save_cache: bool = True, notice=None) -> Facts:
    """``lock``: a conda-lock lockfile to compare with (``facts.lock``); LockfileError when unreadable.
    ``save_cache=False``: write nothing at all, not even the integrity hash cache (``--dry-run``).
    ``notice(text)``: told before a long step (the first hashing of big packages); the CLI prints it."""
    from fixdnn.facts import binversion, distributions, driver, frameworks, integrity, libraries, loads
    from fixdnn.facts.markers import marker_env
    from fixdnn.knowledge import compat as compat_mod
    from fixdnn.model.facts import Facts
    from fixdnn.target.interpreter import discover

    compat = compat or compat_mod.load()
    target, unknowns = discover(host, spec)
    locked = None
    if lock is not None:  # read first: a bad lockfile fails before the slow probes
        from fixdnn.facts.lockfile import conda_subdir, read

        locked = read(lock, conda_subdir(target.platform, target.machine))
    search = tuple(dict.fromkeys(target.sys_path + target.site_dirs))
    dists, more = distributions.gather(host, search)
    unknowns += more
    fws, more = frameworks.gather(host, dists, compat, marker_env(target))
    unknowns += more
    env = loads.loader_env(host, target)
    requires = {d.name: d.requires for d in dists}
    outcomes = loads.gather(host, target, fws, requires, env, compat)
    resolved = tuple((o.path, "resolved by the loader model") for o in outcomes if o.path)
    copies, more = libraries.gather(host, target, dists, env.ld_cache, resolved)
    unknowns += more
    copies, more = binversion.fill(host, copies, save_cache=save_cache)  # only copies known by major alone
    unknowns += more
    # Hashing is what costs (gigabytes): the libraries that would load are hashed now, every other file is
    # compared by size until --verify-all (or an earlier run) hashed it.
    loading = {o.path for o in outcomes if o.path}
    loading |= {host.realpath(p) for p in loading}
    checks, more = integrity.gather(host, target, dists, verify_all=verify_all, save_cache=save_cache,
                                    notice=notice, hash_only=frozenset(loading))
    unknowns += more
    cpu_side = _cpu_side(host, target, dists, env)
    unknowns += cpu_side.pop("unknowns")
    gpu_side, more = _gpu_side(host, target, fws, dists, env, compat, save_cache)
    unknowns += more
    return Facts(
        target=target,
        distributions=dists,
        frameworks=fws,
        libraries=copies,
        loads=outcomes,
        driver=driver.gather(host),
        env=relevant_env(host.environ),
        unknowns=tuple(unknowns),
        integrity=checks,
        lock=locked,
        gpu=gpu_side,
        links=_links(host, target, fws, outcomes, env, dists, compat, save_cache),
        **cpu_side,
    )


def dumps(facts: Facts) -> str:
    from fixdnn.base.serial import to_json

    return json.dumps(to_json(facts), indent=2, sort_keys=False)


def loads_json(text: str, origin: str = "facts file") -> Facts:
    """Read a saved facts file; raises ValueError with one line saying what is wrong."""
    from fixdnn.base.serial import from_json
    from fixdnn.model.facts import FACTS_SCHEMA, Facts

    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{origin}: not JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != FACTS_SCHEMA:
        raise ValueError(f"{origin}: not a fixdnn facts file (expected schema {FACTS_SCHEMA!r})")
    try:
        return from_json(Facts, data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{origin}: {exc}") from None


def _cpu_side(host, target, dists, env) -> dict:
    """OpenMP / MKL runtimes, thread settings, the search path and the conda records (issue 3 §1, §2, §4)."""
    from fixdnn.facts import conda, cpu

    rules = cpu.load_rules()

    def wanted(rel: str) -> bool:
        base = rel.rsplit("/", 1)[-1]
        return rules.runtime_of(base) is not None or rules.mkl_part(base) is not None

    records = conda.gather(host, target.prefix, wanted)  # nothing unless the prefix has conda-meta/
    facts, more = cpu.gather(host, target, dists, records, env, rules)
    return {"cpu": facts, "conda_packages": records.packages, "unknowns": list(records.unknowns) + list(more)}


def _gpu_side(host, target, fws, dists, env, compat, save_cache: bool):
    """GPUs, the user-space driver and the frameworks' compiled kernels (issue 18); fat binaries are
    read once per file identity, then from the cache in fixdnn's state folder."""
    from fixdnn.base.state import target_file
    from fixdnn.facts import fatbin, gpu

    cache = fatbin.Cache(target_file(host, target, fatbin.CACHE_NAME, False))
    facts, unknowns = gpu.gather(host, fws, dists, env, compat.gpu, cache)
    if save_cache and cache.dirty:
        cache.path = target_file(host, target, fatbin.CACHE_NAME, True)
        cache.save()
    return facts, unknowns


def _links(host, target, fws, outcomes, env, dists, compat, save_cache: bool):
    """Symbol versions of the bindings between DNN / CUDA libraries, each checked once per file identity."""
    from fixdnn.base.filecache import FileCache
    from fixdnn.base.state import target_file
    from fixdnn.facts import links

    cache = FileCache(target_file(host, target, links.CACHE_NAME, False), links.CACHE_SCHEMA)
    found = links.gather(host, fws, outcomes, env, dists, cache, sys_path=target.sys_path, compat=compat)
    if save_cache and cache.dirty:
        cache.path = target_file(host, target, links.CACHE_NAME, True)
        cache.save()
    return found
