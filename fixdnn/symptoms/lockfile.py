"""Lockfile symptoms: the environment has drifted from the conda-lock lockfile given with ``--lock FILE``."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from fixdnn.facts.integrity import relevant
from fixdnn.model.facts import Facts
from fixdnn.symptoms.registry import check


@dataclass(frozen=True)
class Drift:
    name: str
    manager: str  # conda | pip
    change: str  # changed | missing | extra
    locked_version: str | None
    installed_version: str | None
    locked_build: str | None = None
    installed_build: str | None = None


def _version_equal(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return False


def drift(facts: Facts, *, relevant_only: bool = True) -> list[Drift]:
    """Packages whose installed state differs from ``facts.lock`` (pure). Only DNN-relevant names by default
    (``facts.lock.pip_patterns`` / ``conda_patterns``); a conda build string counts as part of the version."""
    lock = facts.lock
    if lock is None:
        return []
    def wanted(name: str, manager: str) -> bool:
        if not relevant_only:
            return True
        return relevant(name, lock.pip_patterns if manager == "pip" else lock.conda_patterns)

    installed: dict[tuple[str, str], tuple[str, str | None]] = {}
    for dist in facts.distributions:
        if (dist.installer or "").strip().lower() != "conda":
            installed[("pip", dist.name)] = (dist.version, None)
    for pkg in facts.conda_packages:
        installed[("conda", pkg.name)] = (pkg.version, pkg.build or None)
    locked = {(p.manager, p.name): p for p in lock.packages}
    out: list[Drift] = []
    for (manager, name), p in sorted(locked.items()):
        if not wanted(name, manager):
            continue
        have = installed.get((manager, name))
        if have is None:
            if not p.optional:
                out.append(Drift(name, manager, "missing", p.version, None, p.build, None))
            continue
        version, build = have
        if not _version_equal(version, p.version) or (manager == "conda" and p.build and build and p.build != build):
            out.append(Drift(name, manager, "changed", p.version, version, p.build, build))
    for (manager, name), (version, build) in sorted(installed.items()):
        if (manager, name) not in locked and wanted(name, manager):
            out.append(Drift(name, manager, "extra", None, version, None, build))
    return out


def _commands(d, prefix: str | None) -> dict:
    """The exact commands that restore one package (shell-quoted: prefixes may hold spaces or quotes)."""
    where = shlex.quote(prefix) if prefix else "PREFIX"
    if d.manager == "conda":
        if d.change == "extra":
            return {"conda_command": f"conda remove -p {where} {shlex.quote(d.name)}"}
        spec = f"{d.name}={d.locked_version}" + (f"={d.locked_build}" if d.locked_build else "")
        return {"conda_spec": spec, "conda_command": f"conda install -p {where} {shlex.quote(spec)}"}
    if d.change == "extra":
        return {}
    return {"pin": f"{d.name}=={d.locked_version}"}


def _label(version: str | None, build: str | None) -> str:
    return f"{version} ({build})" if version and build else (version or "not installed")


@check("FDN501", "lockfile-drift", "error", "A DNN package differs from the lockfile")
def lockfile_drift(facts: Facts, compat):
    """Checked only with ``fixdnn --lock FILE`` (a conda-lock lockfile, for example one written by
    ``fixdnn lock -o FILE``). A package that can break a DNN process (a framework, cuDNN, CUDA, NCCL, MKL, an
    OpenMP runtime, NumPy/SciPy: the names of ``rules/compat/integrity.toml``) is installed at another version
    (or, for conda, another build) than the lockfile pins, is missing although the lockfile requires it, or
    is installed although the lockfile does not list it. The environment no longer is the one that was tested
    and pinned, and "it worked yesterday" errors follow: a cuDNN minor that a framework was not built
    against, a second OpenMP runtime.

    Restoring the locked versions repairs it: exact pins with pip for pip entries; for conda entries the
    exact ``conda install -p PREFIX name=version=build`` command, which fixdnn prints as a manual step
    because it does not run conda itself."""
    lock = facts.lock
    if lock is None:
        return
    prefix = facts.target.prefix
    for d in drift(facts):
        locked, have = _label(d.locked_version, d.locked_build), _label(d.installed_version, d.installed_build)
        if d.change == "missing":
            summary = f"{d.name} {locked} is locked ({d.manager}) but not installed"
        elif d.change == "extra":
            summary = f"{d.name} {have} is installed ({d.manager}) but not in the lockfile"
        else:
            summary = f"{d.name} is {have}, the lockfile pins {locked} ({d.manager})"
        evidence = {
            "name": d.name, "manager": d.manager, "change": d.change,
            "locked_version": d.locked_version, "installed_version": d.installed_version,
            "locked_build": d.locked_build, "installed_build": d.installed_build,
            "lockfile": lock.path, "platform": lock.platform,
            **_commands(d, prefix),
        }
        if d.manager == "conda":
            hint = f"run: {evidence['conda_command']}"
        elif d.change == "extra":
            hint = f"uninstall it: pip uninstall {d.name}"
        else:
            hint = f"install the locked version: pip install --no-deps {d.name}=={d.locked_version}"
        yield lockfile_drift.spec.make(
            summary, evidence,
            chain=[f"{lock.path} ({lock.platform}) locks {d.name}: {locked if d.locked_version else 'absent'}",
                   f"installed ({d.manager}): {have if d.installed_version else 'absent'}"],
            hint=hint)
