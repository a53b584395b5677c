"""The NVIDIA kernel driver's version, from the kernel's own files. Its absence is a fact, not an error."""

from __future__ import annotations

import re

from fixdnn.model.facts import Driver
from fixdnn.target.host import Host, HostError

_PROC = "/proc/driver/nvidia/version"
_SYS = "/sys/module/nvidia/version"
_KERNEL_MODULE = re.compile(r"Kernel Module(?: for [\w-]+)?\s+(\d+\.\d+(?:\.\d+)?)")


def gather(host: Host) -> Driver | None:
    try:
        m = _KERNEL_MODULE.search(host.read_text(_PROC, limit=8192))
        if m:
            return Driver(m.group(1), _PROC)
    except HostError:
        pass
    try:
        version = host.read_text(_SYS, limit=256).strip()
        if re.fullmatch(r"\d+\.\d+(?:\.\d+)?", version):
            return Driver(version, _SYS)
    except HostError:
        pass
    return None
