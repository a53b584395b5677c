"""The target's PEP 508 marker environment and the wheel tags it installs, from what its interpreter said.

Markers (``; sys_platform == "linux"``, ``; python_version < "3.12"``) and wheel tags are questions about
the *target* interpreter, not about the one running fixdnn (another Python version, another venv, or a
``--root`` image of another machine). The probe (target/_probe.py) asks the target for both. A target read
from its files alone has no interpreter to ask: its marker environment is built from what the files say
(the Python version in the site dir's name) and Linux, the only platform fixdnn diagnoses; its glibc is
unknown, so any manylinux wheel for its machine counts.
"""

from __future__ import annotations

import platform as _platform
import re

from packaging.markers import Marker
from packaging.tags import Tag, compatible_tags, cpython_tags, generic_tags
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from fixdnn.model.facts import TargetInfo

_LEGACY_MANYLINUX = {(2, 17): "manylinux2014", (2, 12): "manylinux2010", (2, 5): "manylinux1"}
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_UNKNOWN_GLIBC_MINOR = 40  # no interpreter to ask: every manylinux_2_N up to this counts


def marker_env(target: TargetInfo) -> dict[str, str]:
    """The target's marker environment (the probe's, or one built from the target's files)."""
    if target.markers:
        return dict(target.markers)
    version = target.python_version or ""
    short = ".".join(version.split(".")[:2])
    machine = target.machine or _platform.machine()
    return {
        "implementation_name": "cpython", "implementation_version": version, "os_name": "posix",
        "platform_machine": machine, "platform_python_implementation": "CPython", "platform_release": "",
        "platform_system": "Linux", "platform_version": "", "python_full_version": version,
        "python_version": short, "sys_platform": target.platform or "linux",
    }


def applies(requirement_marker: Marker | None, env: dict[str, str], *, any_extra: bool = False,
            extra: str = "") -> bool:
    """Does a requirement's marker hold for the target? ``any_extra``: true when it holds for one of the
    extras it names (a pin under an extra still counts); an unevaluable marker does not hold."""
    if requirement_marker is None:
        return True
    extras = _EXTRA.findall(str(requirement_marker)) if any_extra else []
    try:
        return any(requirement_marker.evaluate({**env, "extra": e}) for e in extras or [extra])
    except Exception:  # packaging raises several types for odd markers: it does not hold
        return False


def _platforms(env: dict[str, str], glibc: str | None) -> list[str]:
    machine = env.get("platform_machine") or ""
    if not env.get("sys_platform", "").startswith("linux") or not machine:
        return []
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine.lower(), machine)
    out = []
    m = re.match(r"(\d+)\.(\d+)", glibc or "")
    major, top = (int(m.group(1)), int(m.group(2))) if m else (2, _UNKNOWN_GLIBC_MINOR)
    if m or glibc is None:
        for minor in range(top, 4, -1):
            out.append(f"manylinux_{major}_{minor}_{arch}")
            if (major, minor) in _LEGACY_MANYLINUX:
                out.append(f"{_LEGACY_MANYLINUX[(major, minor)]}_{arch}")
    out.append(f"linux_{arch}")
    return out


def wheel_tags(target: TargetInfo) -> frozenset[Tag]:
    """Every tag a wheel may carry and still install into the target."""
    env = marker_env(target)
    parts = env.get("python_version", "").split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        return frozenset()
    version = (int(parts[0]), int(parts[1]))
    wheel = target.wheel_env or {}
    platforms = _platforms(env, (wheel.get("glibc") or "") if target.wheel_env else None)  # "": not glibc
    soabi = wheel.get("soabi") or ""
    m = re.match(r"cpython-(\d+)(t?)", soabi)
    abis = [f"cp{m.group(1)}{m.group(2)}"] if m else None
    if env.get("implementation_name", "cpython") == "cpython":
        tags = list(cpython_tags(version, abis=abis, platforms=platforms))
    else:
        tags = list(generic_tags(abis=abis, platforms=platforms))
    tags += list(compatible_tags(version, platforms=platforms))
    return frozenset(tags)


def wheel_fits(filename: str, name: str, version_equal, tags: frozenset[Tag] | None) -> bool:
    """Is ``filename`` a wheel of project ``name`` whose version ``version_equal`` accepts, installable with
    ``tags`` (None: tags not known, name and version only)?"""
    if not filename.endswith(".whl"):
        return False
    try:
        wname, wversion, _build, wtags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return False
    if wname != canonicalize_name(name) or not version_equal(str(wversion)):
        return False
    return tags is None or not wtags.isdisjoint(tags)


__all__ = ["applies", "marker_env", "wheel_fits", "wheel_tags"]
