"""conda-lock lockfiles, read: ``fixdnn --lock FILE`` compares the environment with one.

Reading uses conda-lock's own models (``conda_lock.lockfile``), so fixdnn reads what conda-lock writes (and
what ``fixdnn lock -o``, in :mod:`fixdnn.repair.lockwrite`, writes). conda-lock is the optional extra
``fixdnn[conda]`` (112 MB): only its lockfile models are imported (0.35 s; the package's ``__init__``, which
fixdnn skips, would add 0.45 s), inside the functions that need them, never at module import; its absence is
:class:`CondaLockMissing` (one line saying how to install it).

The comparison with the installed packages (drift) is pure and lives with its symptom,
:mod:`fixdnn.symptoms.lockfile`.
"""

from __future__ import annotations

from pathlib import Path

from fixdnn.model.facts import LockedPackage, LockFacts

INSTALL_HINT = "conda-lock is not installed: pip install 'fixdnn[conda]'"
_SUBDIRS = {
    ("linux", "x86_64"): "linux-64", ("linux", "amd64"): "linux-64", ("linux", "aarch64"): "linux-aarch64",
    ("linux", "arm64"): "linux-aarch64", ("linux", "ppc64le"): "linux-ppc64le", ("linux", "s390x"): "linux-s390x",
    ("linux", "i686"): "linux-32", ("darwin", "x86_64"): "osx-64", ("darwin", "arm64"): "osx-arm64",
    ("win32", "amd64"): "win-64", ("win32", "x86_64"): "win-64", ("win32", "arm64"): "win-arm64",
}
SUBDIR_NAMES = set(_SUBDIRS.values()) | {"noarch"}


class LockfileError(ValueError):
    """A lockfile that cannot be written or read: one line, naming the file."""


class CondaLockMissing(LockfileError):
    def __init__(self):
        super().__init__(INSTALL_HINT)


def _lazy_package(name: str) -> None:
    """Put ``name`` in ``sys.modules`` as its package without running the package's ``__init__`` yet; the
    ``__init__`` runs on the first attribute asked of the package itself (PEP 562 ``__getattr__``).

    conda-lock's ``__init__`` imports its whole command line (the conda and pip solvers, vendored poetry,
    ensureconda): 0.8 s, against 0.35 s for the lockfile models fixdnn uses, which import none of it."""
    import importlib.util
    import sys
    import types

    if name in sys.modules:
        return
    spec = importlib.util.find_spec(name)
    if spec is None or spec.submodule_search_locations is None or spec.loader is None:
        return  # not installed (the import below says so), or not a package: import it the usual way
    package = types.ModuleType(name)
    package.__spec__, package.__file__, package.__loader__ = spec, spec.origin, spec.loader
    package.__path__ = list(spec.submodule_search_locations)
    package.__package__ = name

    def complete(attr: str):
        del package.__getattr__  # the real __init__ below may define any name; ask it only once
        spec.loader.exec_module(package)
        try:
            return package.__dict__[attr]
        except KeyError:
            raise AttributeError(f"module {name!r} has no attribute {attr!r}") from None

    package.__getattr__ = complete
    sys.modules[name] = package


def require_conda_lock():
    try:
        _lazy_package("conda_lock")
        import conda_lock.lockfile  # noqa: F401
        from conda_lock.lockfile.v2prelim import models  # noqa: F401
    except ImportError:
        raise CondaLockMissing() from None


def available() -> bool:
    try:
        require_conda_lock()
        return True
    except CondaLockMissing:
        return False


def conda_subdir(platform: str | None, machine: str | None) -> str | None:
    """conda's name for a platform: ("linux", "x86_64") -> "linux-64"; None when unknown."""
    if not platform or not machine:
        return None
    plat = "linux" if platform.startswith("linux") else platform.lower()
    return _SUBDIRS.get((plat, machine.lower()))


# -- reading -------------------------------------------------------------------------------------------
def first_error(exc) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            loc = ".".join(str(p) for p in first.get("loc", ()))
            return f"{loc}: {first.get('msg', '')}".strip(": ") if loc else str(first.get("msg", exc))
        except Exception:  # pragma: no cover - defensive
            pass
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__


def parse(path: str | Path):
    """conda-lock's own reader, with every failure turned into one :class:`LockfileError` line."""
    require_conda_lock()
    import yaml
    from conda_lock.lockfile import MissingLockfileVersion, UnknownLockfileVersion, parse_conda_lock_file

    p = Path(path)
    if not p.is_file():
        raise LockfileError(f"{path}: no such lockfile" if not p.exists() else f"{path}: not a file")
    try:
        head = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise LockfileError(f"{path}: not a conda-lock lockfile (not UTF-8 text)") from None
    except OSError as exc:
        raise LockfileError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise LockfileError(f"{path}: not a conda-lock lockfile (invalid YAML{where}: {problem})") from None
    if not isinstance(head, dict):
        raise LockfileError(f"{path}: not a conda-lock lockfile (expected a mapping with version, metadata, package)")
    try:
        return parse_conda_lock_file(p)
    except MissingLockfileVersion:
        raise LockfileError(f"{path}: not a conda-lock lockfile (no 'version' key)") from None
    except UnknownLockfileVersion:
        raise LockfileError(f"{path}: unsupported lockfile version {head.get('version')!r} "
                            "(conda-lock reads versions 1 and 2)") from None
    except ValueError as exc:  # pydantic ValidationError
        raise LockfileError(f"{path}: invalid lockfile: {first_error(exc)}") from None
    except Exception as exc:  # conda-lock's own bugs on odd input: still one line
        raise LockfileError(f"{path}: cannot read lockfile ({exc.__class__.__name__}: {exc})") from None


def read(path: str | Path, platform: str | None = None) -> LockFacts:
    """The lockfile's packages for ``platform`` (the target's conda subdir) as plain values."""
    from packaging.utils import canonicalize_name
    from fixdnn.facts.integrity import load_patterns

    lockfile = parse(path)
    platforms = sorted(set(lockfile.metadata.platforms) | {d.platform for d in lockfile.package})
    if platform is None:
        if len(platforms) != 1:
            raise LockfileError(f"{path}: locks {', '.join(platforms) or 'no platform'}; cannot tell which is "
                                "the target's")
        platform = platforms[0]
    elif platform not in platforms:
        raise LockfileError(f"{path}: locks {', '.join(platforms) or 'no platform'}, not the target's {platform}")
    packages = []
    for d in lockfile.package:
        if d.platform != platform or (d.manager == "conda" and d.name.startswith("__")):
            continue
        packages.append(LockedPackage(
            name=canonicalize_name(d.name) if d.manager == "pip" else d.name, manager=d.manager, version=str(d.version),
            build=d.build or None, url=d.url, md5=d.hash.md5, sha256=d.hash.sha256,
            optional="main" not in d.categories))
    patterns = load_patterns()
    return LockFacts(str(path), platform, tuple(sorted(packages, key=lambda p: (p.manager, p.name))),
                     patterns.pip, patterns.conda)


__all__ = ["CondaLockMissing", "INSTALL_HINT", "LockfileError", "SUBDIR_NAMES", "available", "conda_subdir", "first_error",
           "parse", "read", "require_conda_lock"]
