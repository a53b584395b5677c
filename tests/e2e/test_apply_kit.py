"""Shared kit for the apply/rollback tests (no tests here): tiny wheels, a local index, template venvs.

Choice of installer: target venvs are created **without pip** (``venv --without-pip``: 0.1 s instead of
3 s) and fixdnn drives them with its own pip (``<target python> <pip>/__pip-runner__.py``, what ``pip --python``
runs), which is the executor's path for pip-less targets. pip reads the local folder index from ``PIP_NO_INDEX`` /
``PIP_FIND_LINKS`` in the environment, with ``PIP_CONFIG_FILE=/dev/null`` and every other ``PIP_*``
stripped, so the machine's own pip configuration never leaks in.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

from tests import _cache
from tests.envkit.cli import run_python
from tests.envkit.elfkit import build_so

ROOT = Path(__file__).resolve().parents[2]


def _kit_key() -> str:
    """The cached index and template venvs are only as good as the code and the Python that built them:
    a changed kit, or a run on another Python (CI runs 3.10 and 3.13), gets a cache of its own."""
    digest = hashlib.sha256(sys.version.encode())
    for source in (Path(__file__), ROOT / "tests/envkit/elfkit.py"):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


CACHE = _cache.root() / _kit_key()


@contextlib.contextmanager
def _building(name: str):
    """One builder at a time for a cached item (pytest-xdist workers, other checkouts on this machine)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def build_wheel(dest_dir: Path, name: str, version: str, files: dict[str, bytes | Path],
                requires: tuple[str, ...] = (), tag: str = "py3-none-any") -> Path:
    """A real wheel: files + dist-info METADATA / WHEEL / RECORD (urlsafe-b64 sha256, no padding)."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    whl = dest_dir / f"{dist}-{version}-{tag}.whl"
    dest_dir.mkdir(parents=True, exist_ok=True)
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    wheel = f"Wheel-Version: 1.0\nGenerator: fixdnn-tests\nRoot-Is-Purelib: true\nTag: {tag}\n"
    records = []
    with zipfile.ZipFile(whl, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, content in files.items():
            if isinstance(content, Path):
                zf.write(content, rel)
                data_hash, size = _hash_file(content)
            else:
                zf.writestr(rel, content)
                data_hash, size = _b64(content), len(content)
            records.append(f"{rel},sha256={data_hash},{size}")
        for rel, text in ((f"{info}/METADATA", meta), (f"{info}/WHEEL", wheel)):
            zf.writestr(rel, text)
            records.append(f"{rel},sha256={_b64(text.encode())},{len(text.encode())}")
        records.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(records) + "\n")
    return whl


def _hash_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
            size += len(chunk)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode(), size


def cudnn_wheel(index: Path, version: str) -> Path:
    """A stub ``nvidia-cudnn-cu12`` wheel whose libraries are gcc-built ELF with the real SONAMEs."""
    major, minor, patch = (int(x) for x in version.split(".")[:3])
    code = major * 10000 + minor * 100 + patch
    libs = CACHE / "libs" / version
    files: dict[str, bytes | Path] = {"nvidia/__init__.py": b"", "nvidia/cudnn/__init__.py": b""}
    for sub in ("", "_graph", "_ops", "_cnn"):
        so = f"libcudnn{sub}.so.9"
        path = libs / so
        if not path.exists():
            build_so(path, so, functions={"cudnnGetVersion": code} if not sub else {f"f{sub}": 1})
        files[f"nvidia/cudnn/lib/{so}"] = path
    files["nvidia/cudnn/include/cudnn_version.h"] = f"#define CUDNN_MAJOR {major}\n#define CUDNN_MINOR {minor}\n".encode()
    return build_wheel(index, "nvidia-cudnn-cu12", version, files, tag="py3-none-manylinux2014_x86_64")


def index_dir() -> Path:
    """The local folder index (cached across tests): cuDNN 9.1.0.70 and 9.3.0.75, a tool with a script."""
    folder = CACHE / "index"
    stamp = folder / ".complete"
    if stamp.exists():
        return folder
    with _building("index"):
        if stamp.exists():
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        cudnn_wheel(folder, "9.1.0.70")
        cudnn_wheel(folder, "9.3.0.75")
        for ver in ("1.0", "2.0"):
            build_wheel(folder, "cudnn-tool", ver, {"cudnn_tool.py": f"V = {ver!r}\n".encode(),
                                                    f"cudnn_tool-{ver}.data/scripts/cudnn-tool":
                                                    b"#!python\nprint('tool')\n"})
        stamp.write_text("")
    return folder


def pip_environ(index: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE="/dev/null", PIP_NO_INDEX="1", PIP_FIND_LINKS=str(index),
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.update(extra)
    return env


def pip_into(python: Path | str, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """This interpreter's pip, run for ``python`` (a pip-less venv) the way fixdnn runs its own pip there."""
    from fixdnn.target import ownpip

    argv = ownpip.argv_for(str(python))
    return subprocess.run([*argv, *args], env=env, check=check, capture_output=True, text=True, timeout=300)


def _base_python() -> str:
    """The interpreter the running venv was made from. Python 3.10's ``sys._base_executable`` inside a venv is
    the venv's own ``bin/python``: a cached template made from it would point into a venv that a later run
    (another checkout, a CI clone since deleted) no longer has."""
    named = Path(sys.base_prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}")
    return str(named) if named.is_file() else getattr(sys, "_base_executable", sys.executable)


def _template_usable(folder: Path) -> bool:
    """Complete, and its interpreter still there (the cache outlives the checkouts that use it)."""
    return (folder / ".complete").exists() and (folder / "bin/python").resolve().is_file()


def template_venv(kind: str = "cudnn910") -> Path:
    """A venv built once. ``cudnn910``: nvidia-cudnn-cu12 9.1.0.70 and cudnn-tool 1.0 installed, no pip;
    ``cudnn910-pip``: the same with the interpreter's bundled pip; ``bare-pip``: only the bundled pip.
    ensurepip runs once, for ``bare-pip`` (2.5 s of CPU); ``cudnn910-pip`` starts as a copy of it (0.2 s)."""
    folder = CACHE / f"template-{kind}"
    if _template_usable(folder):
        return folder
    with _building(f"template-{kind}"):
        if _template_usable(folder):
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        if kind == "cudnn910-pip":
            copy_venv(folder, "bare-pip")
        else:
            with_pip = kind == "bare-pip"
            subprocess.run([_base_python(), "-m", "venv", "--symlinks", *(() if with_pip else ("--without-pip",)),
                            str(folder)], check=True, capture_output=True)
        env = pip_environ(index_dir())
        if kind.startswith("cudnn910"):
            pip_into(folder / "bin/python", env, "install", "nvidia-cudnn-cu12==9.1.0.70", "cudnn-tool==1.0")
        (folder / ".complete").write_text("")
    return folder


def copy_venv(dest: Path, kind: str = "cudnn910") -> Path:
    """Copy the template to ``dest`` and fix the paths venv wrote into pyvenv.cfg-independent files."""
    src = template_venv(kind)
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns(".complete"))
    for script in (dest / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            data = script.read_bytes()
            if os.fsencode(str(src)) in data:
                script.write_bytes(data.replace(os.fsencode(str(src)), os.fsencode(str(dest))))
    return dest


def site_of(prefix: Path) -> Path:
    return next((prefix / "lib").glob("python3*/site-packages"))


def tree(prefix: Path) -> dict[str, tuple]:
    """Every entry under ``prefix``: relative path -> (type, mode, sha256 | link target).

    ``<prefix>/.fixdnn`` (the environment's own journal and lock, like ``conda-meta/history``) is not
    part of the environment's content; :func:`leftovers` checks it holds no stashed file."""
    out = {}
    for root, dirs, files in os.walk(prefix):
        if Path(root) == Path(prefix) and ".fixdnn" in dirs:
            dirs.remove(".fixdnn")
        for name in dirs + files:
            path = Path(root, name)
            rel = os.fsdecode(path.relative_to(prefix))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("f", stat.S_IMODE(st.st_mode), hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def leftovers(prefix: Path, wait: float = 10.0) -> list[str]:
    """Files of the environment still kept in its journal after every transaction ended: stashes and
    their trash (deleted by a detached process after a rollback, so this waits a little for it)."""
    import time

    deadline = time.monotonic() + wait
    while True:
        from fixdnn.repair.transaction import load

        found = sorted(os.fsdecode(p.relative_to(prefix)) for p in Path(prefix, ".fixdnn", "txn").glob("*/stash*")
                       if load(p.parent).outcome in ("rolled-back", "failed-and-rolled-back"))
        found += [n for n in os.listdir(prefix) if n.startswith(".fixdnn-")]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def cli_env(state: Path, index: Path, **extra: str) -> dict[str, str]:
    env = pip_environ(index, FIXDNN_STATE_DIR=str(state), **extra)
    env.pop("VIRTUAL_ENV", None)
    env.pop("CONDA_PREFIX", None)
    return env


def run_py(code: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a snippet with fixdnn importable (a separate process so SIGKILL tests kill only it)."""
    return run_python(code, [], {**env, "PYTHONPATH": str(ROOT)}, cwd=ROOT, timeout=timeout)


APPLY_SNIPPET = """
import json, sys
from fixdnn.model.actions import Action, Plan
from fixdnn.repair.apply import Target, apply_plan
spec = json.loads(sys.argv[1] if len(sys.argv) > 1 else {spec!r})
plan = Plan(tuple(Action(**a) for a in spec["actions"]))
res = apply_plan(plan, Target(spec["prefix"], spec["python"], tuple(spec["site_dirs"])))
print(json.dumps({{"id": res.txn_id, "outcome": res.outcome, "reason": res.reason}}))
"""


def apply_in_child(prefix: Path, actions: list[dict], env: dict, timeout: float = 120):
    import json

    spec = {"prefix": str(prefix), "python": str(prefix / "bin/python"), "site_dirs": [str(site_of(prefix))],
            "actions": actions}
    return run_py(APPLY_SNIPPET.format(spec=json.dumps(spec)), env, timeout)
