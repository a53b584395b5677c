"""Execute a :class:`fixdnn.model.actions.Plan` inside a transaction (``fixdnn.repair.transaction``), then verify it.

The executor does not care how the plan was made. Per action kind:

* ``pip-install``: ``pip install --dry-run --report`` first lists what would be installed; every
  installed distribution of those names is stashed by rename (RECORD files + dist-info), then the real
  ``pip install --only-binary=:all: <exact pins>`` runs as a child in its own process group. The
  installer is the target's ``python -m pip``; a target without pip is driven by fixdnn's own pip with
  ``--python <target>`` (pip >= 22.3), or by ``uv pip ... --python``.
* ``pip-uninstall``: the stash *is* the uninstall (same files pip would remove), so it is exact and
  reversible without pip.
* env and ``preload`` actions: one more entry in ``etc/fixdnn/env.toml``, rendered by
  ``fixdnn.shell.install`` into the activation scripts and the in-process hook (``fixdnn.shell.preload``:
  a ``.pth`` line, its module and its data in site-packages / etc/fixdnn); every file it touches is copied
  first (or recorded as new), so rollback is byte-exact.
* ``write-file``: the file is copied first (or recorded as new).
* ``manual``: never executed; reported back so the CLI can print it.

Before anything changes, every folder the plan will write to is probed for writability and the
filesystem for room. Nothing here prints: progress goes to the ``on_event`` callback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from packaging.utils import canonicalize_name

from fixdnn.base.atomic import write_atomic
from fixdnn.facts import distinfo
from fixdnn.repair import transaction as txnmod
from fixdnn.repair.transaction import Interrupted, LockError, Transaction, TxnError
from fixdnn.target.host import Host, HostError

if TYPE_CHECKING:
    from fixdnn.model.actions import Action, Plan

MARGIN = 1 << 20  # bytes kept free beyond the estimate


class ApplyError(TxnError):
    """Apply refused before changing anything, or failed and rolled back; one line."""


@dataclass(frozen=True)
class Target:
    prefix: str
    python: str | None
    site_dirs: tuple[str, ...] = ()
    kernelspecs: tuple[str, ...] = ()  # kernel.json files that run this environment and get its variables

    @classmethod
    def from_info(cls, info) -> Target:
        if not info.prefix:
            raise ApplyError("the target has no prefix; apply needs a venv or conda environment")
        return cls(os.path.realpath(info.prefix), info.python, tuple(info.site_dirs))


@dataclass
class Result:
    txn_id: str | None
    outcome: str  # applied | failed-and-rolled-back | nothing-to-do
    reason: str = ""
    steps_done: int = 0
    manual: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------- installed dists


def installed(site_dirs: tuple[str, ...]) -> dict[str, list[Path]]:
    """Canonical name -> metadata folders (dist-info, egg-info), from the site dirs (first match first)."""
    host = Host()
    found: dict[str, list[Path]] = {}
    for site in site_dirs:
        try:
            folders = [f for f in distinfo.scan(host, site) if not isinstance(f, tuple)]
        except HostError:
            continue
        for folder in folders:
            try:
                name = distinfo.read_metadata(host, folder.path).canonical
            except (HostError, distinfo.DistInfoError):  # unreadable METADATA: the folder name still names it
                name = canonicalize_name(folder.folder.rsplit(".", 1)[0].rsplit("-", 1)[0])
            found.setdefault(name, []).append(Path(folder.path))
    return found


def _pyc_of(path: str) -> list[str]:
    """The ``__pycache__`` files compiled from ``path`` (a ``.py``): they go and come back with it."""
    if not path.endswith(".py"):
        return []
    cache = os.path.join(os.path.dirname(path), "__pycache__")
    stem = os.path.basename(path)[:-3] + "."
    try:
        return [os.path.join(cache, n) for n in os.listdir(cache) if n.startswith(stem) and n.endswith(".pyc")]
    except OSError:
        return []


def dist_files(dist_info: Path, prefix: str) -> list[str]:
    """Every existing file of one distribution: RECORD (egg-info: installed-files.txt) entries (``../``
    allowed, never outside the prefix), their ``__pycache__`` files, and everything inside the folder."""
    inside = prefix.rstrip("/") + "/"
    out: dict[str, None] = {}
    host = Host()
    folder = os.fspath(dist_info)
    listed: list[str] = []
    try:
        record = distinfo.record_file(folder, set(os.listdir(folder)))
        if record:
            listed = distinfo.listed_paths(record, distinfo.read_record(host, record))
    except (OSError, HostError, distinfo.DistInfoError):
        listed = []
    for path in listed:
        if not path.startswith(inside):
            continue
        if os.path.lexists(path) and not (os.path.isdir(path) and not os.path.islink(path)):
            out[path] = None
        out.update(dict.fromkeys(_pyc_of(path)))
    for root, dirs, files in os.walk(dist_info):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            out[os.path.join(root, name)] = None
    return list(out)


# ------------------------------------------------------------------------------------------ pip


def pip_command(target: Target) -> list[str]:
    """How to run pip for the target (see the module docstring)."""
    py = target.python
    if not py:
        raise ApplyError("the target has no Python interpreter; pip steps cannot run")
    if any(os.path.isdir(os.path.join(site, "pip")) for site in target.site_dirs):
        return [py, "-m", "pip"]
    from fixdnn.target import ownpip

    own = ownpip.argv_for(py)
    if own:
        return list(own)
    uv = shutil.which("uv")
    if uv:
        return [uv, "pip", "--python", py]  # uv takes --python after the subcommand; see _pip_argv
    raise ApplyError(f"{py} has no pip, and neither fixdnn's Python nor uv can install into it")


def installer_for(action: Action, target: Target, pip_base: list[str] | None = None) -> list[str]:
    """The installer a pip step runs with: the one the plan showed (``action.installer``), else ours."""
    if not action.installer:
        return pip_base or pip_command(target)
    base = list(action.installer)
    if os.path.basename(base[0]) == "uv" and "--python" not in base:
        base += ["--python", target.python or "python"]
    return base


def _pip_argv(base: list[str], sub: list[str]) -> list[str]:
    if os.path.basename(base[0]) == "uv":  # uv pip install --python X ...
        return [base[0], "pip", sub[0], "--python", base[3], *sub[1:]]
    return [*base, *sub]


def pip_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PIP_YES="1")
    for name in ("FIXDNN_TEST_CRASH_AT", "FIXDNN_TEST_FAIL_WRITE", "PYTHONPATH", "PYTHONHOME"):
        env.pop(name, None)
    return env


@contextlib.contextmanager
def _empty_dir(parent: Path):
    """A private empty working folder for a child: ``python -m pip`` puts its working directory first on
    sys.path, so a ``pip/`` or ``json.py`` in the user's folder would run instead of pip. It lives in
    fixdnn's own folder of the environment (``parent``: its state folder, or the transaction's), not in the
    temp folder: a fixdnn killed while pip runs leaves it in the journal, not in /tmp."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="pip-cwd-", dir=parent)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# pip options that would build from source, install somewhere else or read more requirements: never
# passed, whatever the plan says (the planner's allow-list is the first line; this is the last).
_REFUSED_PIP_ARGS = ("--no-binary", "-e", "--editable", "--target", "-t", "--prefix", "--root", "--user",
                     "--src", "-r", "--requirement", "--no-build-isolation", "--use-pep517")


def check_pip_args(action: Action) -> None:
    for arg in action.pip_args:
        if arg.split("=", 1)[0] in _REFUSED_PIP_ARGS:
            raise ApplyError(f"pip option {arg!r} is refused: fixdnn installs exact pins from binary wheels "
                             "into the target only; nothing changed")


def check_pins(action: Action) -> list[str]:
    from packaging.requirements import InvalidRequirement, Requirement

    check_pip_args(action)
    pins = []
    for text in action.packages:
        try:
            req = Requirement(text)
        except InvalidRequirement as exc:
            raise ApplyError(f"{text!r}: not a valid requirement ({exc})") from None
        specs = list(req.specifier)
        if len(specs) != 1 or specs[0].operator not in ("==", "===") or "*" in specs[0].version:
            raise ApplyError(f"{text!r}: pip steps need an exact pin (name==version)")
        pins.append(text)
    return pins


def dry_run(base: list[str], action: Action, workdir: Path) -> list[dict]:
    """What ``pip install`` would install: the report's ``install`` items."""
    report = workdir / "pip-report.json"
    argv = _pip_argv(base, ["install", "--dry-run", "--quiet", "--report", str(report),
                            "--only-binary=:all:", *action.pip_args, *check_pins(action)])
    with _empty_dir(workdir) as cwd:
        proc = subprocess.run(argv, env=pip_env(), capture_output=True, text=True, errors="replace",
                              stdin=subprocess.DEVNULL, cwd=cwd)
    if proc.returncode != 0:
        last = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        raise ApplyError(f"pip cannot install {' '.join(action.packages)}: "
                         f"{last[-1].strip() if last else f'exit {proc.returncode}'}")
    try:
        data = json.loads(report.read_text("utf-8"))
    finally:
        with contextlib.suppress(OSError):
            report.unlink()
    return list(data.get("install") or ())


def _wheel_file(item: dict, base: list[str], workdir: Path) -> str | None:
    """The wheel a report item installs, on this machine: a ``file://`` URL as is; anything else fetched
    once with the installer's own ``pip download`` (its cache and index settings). None when impossible."""
    info = item.get("download_info") or {}
    url = info.get("url", "") if isinstance(info, dict) else ""
    if not isinstance(url, str) or not url:
        return None
    if url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        path = unquote(urlparse(url).path)
        return path if path.endswith(".whl") and os.path.isfile(path) else None
    if os.path.basename(base[0]) == "uv":
        return None
    dest = workdir / "wheels"
    dest.mkdir(exist_ok=True)
    with _empty_dir(workdir) as cwd:
        proc = subprocess.run(_pip_argv(base, ["download", "--quiet", "--no-deps", "--only-binary=:all:",
                                               "-d", str(dest), url.split("#")[0]]),
                              env=pip_env(), capture_output=True, text=True, errors="replace",
                              stdin=subprocess.DEVNULL, cwd=cwd)
    if proc.returncode != 0:
        return None
    name = url.split("#")[0].rsplit("/", 1)[-1]
    from urllib.parse import unquote

    found = dest / unquote(name)
    return str(found) if found.is_file() else None


def wheel_writes(whl: str, target: Target) -> list[str] | None:
    """Every path installing ``whl`` writes (its RECORD, as pip lays it out): the site dir for the
    wheel's root, ``<name>.data/scripts`` in ``bin/``, ``data`` in the prefix, ``purelib`` / ``platlib``
    in the site dir; plus the ``__pycache__`` files of its modules. None when the wheel is unreadable."""
    if not target.site_dirs:
        return None
    site = target.site_dirs[0]
    roots = {"purelib": site, "platlib": site, "scripts": os.path.join(target.prefix, "bin"),
             "data": target.prefix}
    try:
        text = distinfo.wheel_record(whl)
    except (OSError, KeyError, distinfo.DistInfoError):
        return None
    out: list[str] = []
    for _n, row, _e in distinfo.record_rows(text):
        if not row:
            continue
        rel = row[0]
        head, _, rest = rel.partition("/")
        base = site
        if head.endswith(".data") and rest:
            scheme, _, rest = rest.partition("/")
            if scheme not in roots or not rest:
                continue  # headers: pip's own per-scheme folder; not a path fixdnn models
            base, rel = roots[scheme], rest
        path = os.path.normpath(os.path.join(base, rel))
        if not path.startswith(target.prefix.rstrip("/") + "/"):
            continue  # pip refuses these itself
        out += [path, *_pyc_of(path)]
    return out


def _overwritten(writes: list[str]) -> list[str]:
    """The paths of ``writes`` that exist now as files or links (whoever owns them)."""
    return [p for p in writes if os.path.lexists(p) and not (os.path.isdir(p) and not os.path.islink(p))]


def _unpacked_size(item: dict) -> int:
    url = (item.get("download_info") or {}).get("url", "")
    if url.startswith("file://"):
        from urllib.parse import unquote, urlparse

        path = unquote(urlparse(url).path)
        with contextlib.suppress(OSError, zipfile.BadZipFile):
            with zipfile.ZipFile(path) as zf:
                return sum(i.file_size for i in zf.infolist())
    return 0


# ---------------------------------------------------------------------------------------- preflight


@dataclass
class Prepared:
    """One action with everything learned before the transaction starts."""

    action: Action
    report: list[dict] | None = None  # pip-install dry run
    stash_names: list[str] = field(default_factory=list)
    wheel_writes: list[str] = field(default_factory=list)  # every path the step's wheels will write
    env_file: object | None = None  # the EnvFile an env action leads to
    writes: list[str] = field(default_factory=list)  # files a file/env step writes
    needed: int = 0  # bytes


def _env_file_after(prefix: str, action: Action, current):
    from fixdnn.shell.envfile import EnvFile, EnvOp, Preload

    if action.kind == "preload":
        new_pre = Preload(action.path or "", reason=action.reason, fixes=",".join(action.fixes))
        kept = tuple(p for p in current.preloads if p.path != new_pre.path)
        return EnvFile(current.ops, (*kept, new_pre))
    op = {"env-set": "set", "env-unset": "unset"}.get(action.kind, action.kind)
    new = EnvOp(op, action.name or "", action.value if op != "unset" else None, reason=action.reason,
                fixes=",".join(action.fixes))
    ops = tuple(o for o in current.ops if (o.op, o.name, o.value) != (new.op, new.name, new.value))
    return EnvFile((*ops, new), current.preloads)


def _writes_of(report: list[dict], base: list[str], target: Target, workdir: Path) -> list[str]:
    """Every path the report's wheels write; refuses (ApplyError) when a wheel cannot be read, since a
    file it overwrote could then not be restored."""
    out: list[str] = []
    for item in report:
        whl = _wheel_file(item, base, workdir)
        writes = wheel_writes(whl, target) if whl else None
        if writes is None:
            meta = item.get("metadata") or {}
            raise ApplyError(f"cannot read the file list of {meta.get('name', '?')} {meta.get('version', '')} "
                             "before installing it (its wheel could not be fetched), so an overwritten file "
                             "could not be restored; nothing changed")
        out += writes
    return list(dict.fromkeys(out))


def _probe_writable(folder: str) -> str | None:
    """None when a file can be created in ``folder`` (or its nearest existing ancestor)."""
    while not os.path.isdir(folder):
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    probe = os.path.join(folder, f".fixdnn-probe-{os.getpid()}")
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return f"{folder}: {exc.strerror or exc}"
    os.close(fd)
    os.unlink(probe)
    return None


def _other_filesystem(folders: list[str], prefix: str) -> str | None:
    """The first existing folder of ``folders`` on another device than ``prefix`` (stashes are renames into
    ``<prefix>/.fixdnn``, which cannot cross filesystems), or None."""
    try:
        home = os.stat(prefix).st_dev
    except OSError:
        return None
    for folder in folders:
        try:
            if os.stat(folder).st_dev != home:
                return folder
        except OSError:
            continue
    return None


def prepare(plan: Plan, target: Target, workdir: Path, pip_base: list[str] | None = None,
            allow_outside: bool = False) -> list[Prepared]:
    """Dry-run every step and check permissions and room; raises ApplyError and changes nothing."""
    from fixdnn.shell.envfile import EnvFile, EnvFileError
    from fixdnn.shell.install import planned_writes

    prepared: list[Prepared] = []
    dirs: set[str] = set()
    stashed: set[str] = set()  # folders whose files a step moves into the journal (by rename)
    env_now = None
    present = installed(target.site_dirs)
    for action in plan.actions:
        item = Prepared(action)
        if action.kind == "pip-install":
            base = installer_for(action, target, pip_base)
            item.report = dry_run(base, action, workdir)
            names = [canonicalize_name(i["metadata"]["name"]) for i in item.report]
            item.stash_names = [n for n in names if n in present]
            item.wheel_writes = _writes_of(item.report, base, target, workdir)
            item.needed = sum(_unpacked_size(i) for i in item.report)
            dirs.update(target.site_dirs)
            dirs.add(os.path.join(target.prefix, "bin"))
        elif action.kind == "pip-uninstall":
            item.stash_names = [canonicalize_name(n) for n in action.packages if canonicalize_name(n) in present]
            dirs.update(target.site_dirs)
        elif action.kind in ("env-set", "env-unset", "path-prepend", "path-remove", "preload"):
            if env_now is None:
                env_now = EnvFile.load(EnvFile.path_for(target.prefix))
            try:
                env_now = _env_file_after(target.prefix, action, env_now)
                item.writes = [os.fspath(p) for p in planned_writes(target.prefix, env_now, target.site_dirs,
                                                                   target.kernelspecs)]
            except EnvFileError as exc:
                raise ApplyError(f"{exc}; nothing changed") from None
            item.env_file = env_now
            item.needed = 64 << 10
        elif action.kind == "write-file":
            if not action.path or not os.path.isabs(action.path):
                raise ApplyError(f"write-file needs an absolute path, got {action.path!r}")
            if not allow_outside and not os.path.normpath(action.path).startswith(target.prefix.rstrip("/") + "/"):
                raise ApplyError(f"write-file {action.path!r} is outside the environment {target.prefix}; "
                                 "only a plan that says so and was confirmed may write there; nothing changed")
            item.writes = [action.path]
            item.needed = len((action.content or "").encode("utf-8", "surrogateescape"))
        for name in item.stash_names:
            for folder in present[name]:
                stashed.add(os.path.dirname(os.fspath(folder)))
                stashed.update(os.path.dirname(p) for p in dist_files(folder, target.prefix))
        if action.kind == "pip-install":  # the files of other distributions a wheel overwrites
            stashed.update(target.site_dirs)
            stashed.add(os.path.join(target.prefix, "bin"))
        dirs.update(os.path.dirname(p) for p in item.writes)
        prepared.append(item)
    dirs |= stashed
    problems = [p for p in (_probe_writable(d) for d in sorted(dirs)) if p]
    if problems:
        raise ApplyError(f"cannot write to the environment, nothing changed: {problems[0]}"
                         + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    elsewhere = _other_filesystem(sorted(stashed), target.prefix)
    if elsewhere:
        raise ApplyError(f"{elsewhere} is on another filesystem than {target.prefix}, where the journal keeps what "
                         "a step moves aside: rollback could not put it back by rename, so fixdnn does not start; "
                         "nothing changed (run the plan's pip command yourself, or keep the environment on one "
                         "filesystem)")
    needed = sum(p.needed for p in prepared)
    if needed:
        free = shutil.disk_usage(target.prefix).free
        if free < needed + MARGIN:
            raise ApplyError(f"not enough room on the filesystem of {target.prefix}: "
                             f"{free // 1024} KiB free, about {(needed + MARGIN) // 1024} KiB needed; "
                             "nothing changed")
    return prepared


# ------------------------------------------------------------------------------------------ steps


def _run_pip(txn: Transaction, step: int, argv: list[str], intent: dict, sig: dict) -> None:
    log = txn.folder / f"step-{step}.pip.log"
    with open(log, "wb") as out, _empty_dir(txn.folder) as cwd:
        proc = subprocess.Popen(argv, env=pip_env(), stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        txn.append({"op": "spawned", "step": step, "pgid": proc.pid})
        intent["pgid"] = proc.pid
        try:
            delay = txnmod.crash_after_delay(step)
            if delay is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=delay)
                os.kill(os.getpid(), 9)
            code = proc.wait()
        except BaseException:
            sig["armed"] = False
            txnmod.kill_group(proc.pid)
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
            raise
    if code != 0:
        lines = [ln.strip() for ln in log.read_text("utf-8", "replace").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]  # pip's own summary beats its last detail line
        last = (errors or lines or [f"exit {code}"])[0 if errors else -1]
        raise ApplyError(f"pip failed (exit {code}): {last}")


def _step(txn: Transaction, step: int, item: Prepared, target: Target, pip_base: list[str] | None,
          sig: dict, fresh_report: bool) -> None:
    action = item.action
    intent: dict = {"op": "intent", "step": step, "kind": action.kind, "describe": action.describe(target.python)}
    if action.kind in ("pip-install", "pip-uninstall"):
        if action.kind == "pip-install" and fresh_report:
            base = installer_for(action, target, pip_base)
            item.report = dry_run(base, action, txn.folder)
            names = [canonicalize_name(i["metadata"]["name"]) for i in item.report]
            present = installed(target.site_dirs)
            item.stash_names = [n for n in names if n in present]
            item.wheel_writes = _writes_of(item.report, base, target, txn.folder)
        present = installed(target.site_dirs)
        paths: list[str] = []
        for name in item.stash_names:
            for folder in present.get(name, ()):
                paths.extend(dist_files(folder, target.prefix))
        # Files of *other* distributions the new wheels overwrite: stashed too, so rollback restores them.
        paths = list(dict.fromkeys(paths + _overwritten(item.wheel_writes)))
        listing = {}
        if action.kind == "pip-install":
            listing = txnmod.scan(target.prefix, txn.exclude())
            intent["listing"] = txn.write_json(f"step-{step}.listing.json", listing)
        intent["stash"] = txn.prepare_stash(step, paths, target.prefix,
                                               (*target.site_dirs, *map(os.path.realpath, target.site_dirs)))
        intent["stashed"] = item.stash_names
        txn.append(intent)
        txnmod._hook(f"{step}:intent")
        txnmod.fail_write_hook(step)
        txn.do_stash(intent["stash"])
        txnmod._hook(f"{step}:stash")
        if action.kind == "pip-install":
            pins = check_pins(action)
            hashed = action.hashed_pins()
            if hashed:  # what the plan's dry run saw, and nothing else (pip's hash-checking mode)
                req = txn.folder / f"step-{step}.requirements.txt"
                req.write_text("".join(f"{p} --hash=sha256:{h}\n" for p, h in hashed.items()), encoding="utf-8")
                pins = ["--require-hashes", "-r", str(req)]
            argv = _pip_argv(installer_for(action, target, pip_base),
                             ["install", "--only-binary=:all:", *action.pip_args, *pins])
            _run_pip(txn, step, argv, intent, sig)
            after = txnmod.scan(target.prefix, txn.exclude())
            created = [p for p in after if p not in listing]
            txn.append({"op": "done", "step": step,
                        "created": txn.write_json(f"step-{step}.created.json", created)})
        else:
            txn.append({"op": "done", "step": step})
    elif action.kind in ("env-set", "env-unset", "path-prepend", "path-remove", "preload", "write-file"):
        from fixdnn.shell.envfile import EnvFile
        from fixdnn.shell.install import install, planned_writes
        from fixdnn.shell.preload import files as preload_files

        if action.kind == "write-file":
            writes = [action.path]
        else:
            writes = [os.fspath(p) for p in planned_writes(target.prefix, item.env_file, target.site_dirs,
                                                                  target.kernelspecs)]
            writes.append(os.fspath(EnvFile.path_for(target.prefix)))
            # every file the in-process hook can own, its bytecode included, so rollback is byte-exact
            writes += [os.fspath(p) for p in preload_files(target.prefix, target.site_dirs)]
        intent["backup"] = txn.backup_files(step, list(dict.fromkeys(writes)))
        txn.append(intent)
        txnmod._hook(f"{step}:intent")
        txnmod.fail_write_hook(step)
        if action.kind == "write-file":
            write_atomic(action.path, action.content or "", make_parents=True)
        else:
            from fixdnn.shell.envfile import EnvFileError

            try:
                install(target.prefix, item.env_file, target.site_dirs, target.kernelspecs)
            except EnvFileError as exc:  # e.g. a preloaded library vanished since prepare
                raise ApplyError(str(exc)) from None
        txn.append({"op": "done", "step": step})
    txnmod._hook(f"{step}:done")


def apply_plan(plan: Plan, target: Target, *, verify: Callable[[], list[str]] | None = None,
               on_event: Callable[[str], None] | None = None, expect_head: str | None | type(...) = ...,
               allow_outside: bool = False) -> Result:
    """Run every executable action of ``plan`` in one transaction; verify; roll back on any failure.

    ``verify`` is called after the last step and returns the reasons the result is not acceptable
    (empty: accepted). ``expect_head`` is :func:`fixdnn.repair.transaction.head` when the plan was made: a
    newer transaction means the plan is stale and it is refused (LockError). Raises :class:`ApplyError`
    (nothing changed) or :class:`fixdnn.repair.transaction.LockError`. ``allow_outside``: the plan said it
    writes outside the environment and the user confirmed it (otherwise such a write-file is refused);
    a failure after changes began is rolled back and returned as outcome ``failed-and-rolled-back``.
    """
    say = on_event or (lambda _msg: None)
    manual = [a.text or "" for a in plan.actions if a.kind == "manual"]
    if not plan.runnable:
        bad = next(a for a in plan.actions if a.available is False)
        raise ApplyError(f"the plan cannot run: {bad.describe(target.python)} ({bad.check or 'unavailable'})")
    executable = [a for a in plan.actions if a.kind != "manual"]
    for action in executable:
        check_pip_args(action)  # before anything else runs, pip included
    if not executable:
        return Result(None, "nothing-to-do", manual=manual)
    prefix = target.prefix
    try:
        txnmod.writable_state(prefix)
    except LockError:
        raise
    except TxnError as exc:
        raise ApplyError(str(exc)) from None
    with txnmod.EnvLock(prefix):
        now = txnmod.head(prefix)
        if expect_head is not ... and now != expect_head:
            raise LockError(f"another fixdnn changed {prefix} while this plan was made (transaction {now}); "
                            "nothing changed; run fixdnn again to plan from the environment as it is now")
        pip_base = pip_command(target) if any(a.kind == "pip-install" for a in executable) else None
        work = txnmod.env_state(prefix)  # made by EnvLock
        from fixdnn.model.actions import Plan as PlanType

        prepared = prepare(PlanType(tuple(executable)), target, work, pip_base, allow_outside)
        txn = Transaction.begin(prefix, {"python": target.python,
                                         "actions": [a.describe(target.python) for a in executable],
                                         "kinds": [a.kind for a in executable]})
        done = 0
        reason = ""
        with txnmod.signals_as_interrupt() as sig:
            try:
                pip_ran = False
                for step, item in enumerate(prepared, 1):
                    say(f"[{step}/{len(prepared)}] {item.action.describe(target.python)}")
                    _step(txn, step, item, target, pip_base, sig, fresh_report=pip_ran)
                    pip_ran = pip_ran or item.action.kind == "pip-install"
                    done += 1
                txnmod._hook("0:end")
                if verify is not None:
                    sig["armed"] = False
                    problems = verify()
                    if problems:
                        reason = "verification failed: " + "; ".join(problems)
            except Interrupted as exc:
                reason = f"interrupted by {exc}"
            except (ApplyError, OSError, TxnError) as exc:
                reason = f"step {done + 1} failed: {exc}"
            sig["armed"] = False
            if not reason:
                txn.finish("applied")
                return Result(txn.id, "applied", steps_done=done, manual=manual)
            say(f"rolling back: {reason}")
            txn.rollback()
            txn.finish("failed-and-rolled-back", reason)
        return Result(txn.id, "failed-and-rolled-back", reason, steps_done=done, manual=manual)


def history(prefix: str) -> list[dict]:
    out = []
    for rec in txnmod.transactions(os.path.realpath(prefix)):
        begin = rec.begin
        out.append({"id": rec.id, "time": txnmod.id_time(rec.id), "actions": begin.get("actions", []),
                    "outcome": rec.outcome, "reason": rec.reason})
    return out

