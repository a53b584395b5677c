"""The machine a test diagnoses against: a folder standing in for ``/opt``, ``/usr/local``, the loader cache,
the default library directories and the driver's files (``fixdnn.target.host.SYSTEM_PLACES``).

Every test session runs with ``FIXDNN_SYSTEM_ROOT`` pointing at a bare machine (see ``tests/conftest.py``), so
no default test reads the machine it runs on. A test that wants something on "the machine" plants it::

    m = Machine(tmp_path / "machine")
    m.cudnn("/opt/cudnn-9.1", "9.1.0")              # a system cuDNN in /opt/cudnn-9.1/lib
    m.driver("580.65.06")                           # /proc/driver/nvidia/version
    host = Host(environ=environ, system=m.root)     # in-process
    environ[SYSTEM_ROOT_VAR] = str(m.root)          # or for a fixdnn subprocess
"""

from __future__ import annotations

import os
from pathlib import Path

from fixdnn.target.host import SYSTEM_PLACES, SYSTEM_ROOT_VAR

__all__ = ["Machine", "SYSTEM_PLACES", "SYSTEM_ROOT_VAR", "hermetic_environ"]


class Machine:
    """A planted machine: a bare one has only ``/sys/devices/system/cpu/online`` (4 CPUs)."""

    def __init__(self, root: Path, cpus: int = 4):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.write("/sys/devices/system/cpu/online", f"0-{cpus - 1}\n")

    def path(self, system_path: str) -> Path:
        """Where ``system_path`` (as the diagnosis sees it) lies on disk."""
        if not any(system_path == p or system_path.startswith(p + "/") for p in SYSTEM_PLACES):
            raise ValueError(f"{system_path} is not a machine-wide place (see SYSTEM_PLACES)")
        return self.root / system_path.lstrip("/")

    def write(self, system_path: str, content: str | bytes) -> Path:
        dest = self.path(system_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(content.encode() if isinstance(content, str) else content)
        return dest

    def cudnn(self, lib_dir: str, version: str) -> Path:
        """A gcc-built system cuDNN (shim and sub-libraries with their real SONAMEs) in ``lib_dir``."""
        from tests.envkit.env import stray_cudnn

        return stray_cudnn(self.path(lib_dir), version)

    def driver(self, version: str) -> Path:
        return self.write("/proc/driver/nvidia/version",
                          f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {version}  Tue Jul  1 00:00:00 UTC 2025\n")


def hermetic_environ(home: Path, **extra: str) -> dict[str, str]:
    """A minimal process environment for a fixdnn subprocess: the session's bare machine, a private HOME,
    no LD_LIBRARY_PATH / PYTHONPATH / VIRTUAL_ENV from the shell that started pytest."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "LANG": "C.UTF-8",
           SYSTEM_ROOT_VAR: os.environ[SYSTEM_ROOT_VAR]}
    env.update(extra)
    return env
