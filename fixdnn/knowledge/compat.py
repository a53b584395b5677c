"""The compatibility tables of ``rules/compat/``: what each framework release needs.

Knowledge lives in the TOML files, not here; this module only loads them, checks their shape, and
answers lookups. A malformed table is a :class:`RulesError` naming the file and line.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING
from pathlib import Path

from packaging.version import InvalidVersion, Version

if TYPE_CHECKING:
    from fixdnn.knowledge.gpu import GpuTables

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class RulesError(Exception):
    """A rule or table file is malformed: one line with file, line and what was expected."""


@lru_cache(maxsize=1)  # asked by every check at every diagnosis; the install does not move while we run
def rules_dir() -> Path:
    """The shipped rules: ``fixdnn/rules`` inside a wheel, the top-level ``rules/`` in a checkout."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "rules", package.parent / "rules"):
        if candidate.is_dir():
            return candidate
    raise RulesError(f"no rules directory next to {package}; reinstall fixdnn")


_HEADER = re.compile(r"^[ \t]*\[\[?[ \t]*[A-Za-z0-9_.-]+[ \t]*\]", re.M)  # [table] or [[array]]


def line_of(text: str, key: str, at: int | None = None) -> int:
    """Best-effort line number of ``key`` in a TOML text (1 when not found).

    ``at``: the offset of one array entry's ``[[table]]`` header (:func:`entries`): the key is looked for
    in that entry only, and a key the entry lacks points at its header, never at another entry's key."""
    start, end = 0, len(text)
    if at is not None:
        start = at
        nxt = _HEADER.search(text, text.find("\n", at) + 1) if "\n" in text[at:] else None
        end = nxt.start() if nxt else len(text)
    m = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=|^\s*\[\[?{re.escape(key)}[\].]", re.M).search(text, start, end)
    if m:
        return text.count("\n", 0, m.start()) + 1
    return text.count("\n", 0, at) + 1 if at is not None else 1


def entries(path: Path, text: str, table: dict, key: str) -> list[tuple[dict, int | None]]:
    """``table[key]`` (an array of tables) as (entry, offset of its ``[[key]]`` header) pairs.

    Entries written inline (``key = [{...}]``) have no header of their own: their offset is None and
    lines fall back to the first mention of the key."""
    rows = need(path, text, table, key, list)
    heads = [m.start() for m in re.finditer(rf"^[ \t]*\[\[[ \t]*{re.escape(key)}[ \t]*\]\]", text, re.M)]
    return list(zip(rows, heads if len(heads) == len(rows) else [None] * len(rows)))


def load_toml(path: Path) -> tuple[dict, str]:
    """(data, text) of a rule or table file; RulesError "FILE:LINE: what is wrong" when it cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise RulesError(f"{path}:1: not UTF-8 text") from None
    try:
        return tomllib.loads(text), text
    except RecursionError:  # tomllib recurses once per nesting level: 20,000 '[' is not a rule
        raise RulesError(f"{path}:1: invalid TOML: nested too deeply") from None
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\(at line (\d+), column \d+\)", msg)
        line = m.group(1) if m else "1"
        raise RulesError(f"{path}:{line}: invalid TOML: {re.sub(r' ?[(]at line .*[)]', '', msg)}") from None


def _ver(path: Path, text: str, key: str, value: object, at: int | None = None) -> Version:
    try:
        return Version(str(value))
    except InvalidVersion:
        raise RulesError(f"{path}:{line_of(text, key, at)}: {key} = {value!r} is not a version") from None


def _field(path: Path, text: str, row: dict, at: int | None, key: str) -> Version:
    """A version-valued key of one array entry (``at``: the entry's offset, see :func:`entries`)."""
    return _ver(path, text, key, need(path, text, row, key, str, at=at), at)


_ARTICLE = {"int": "an int", "dict": "a table", "list": "an array", "str": "a string", "bool": "true or false"}


def need(path: Path, text: str, table: dict, key: str, kind: type, where: str = "", at: int | None = None):
    """``table[key]`` checked to be of ``kind``; RulesError "FILE:LINE: ..." otherwise (``where``: the key
    to point at when the missing one has no line of its own; ``at``: the entry's offset, see :func:`line_of`)."""
    if key not in table:
        raise RulesError(f"{path}:{line_of(text, where or key, at)}: missing key {key!r}")
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RulesError(f"{path}:{line_of(text, key, at)}: {key} must be {_ARTICLE.get(kind.__name__, kind.__name__)}")
    return value


@dataclass(frozen=True)
class TfBuild:
    version: Version  # major.minor
    cudnn: Version
    cuda: Version
    and_cuda: dict[str, str]


@dataclass(frozen=True)
class TorchWheel:
    version: Version
    cuda: Version
    cudnn_pin: str


@dataclass(frozen=True)
class JaxMinimum:
    since: Version
    cuda_major: int
    cudnn: Version


@dataclass(frozen=True)
class Compat:
    tf_distributions: tuple[str, ...]
    tf_builds: tuple[TfBuild, ...]
    torch_wheels: tuple[TorchWheel, ...]
    jax_plugins: tuple[str, ...]
    jax_minimums: tuple[JaxMinimum, ...]
    driver_floor: dict[int, str]
    cudnn_sets: dict[int, tuple[tuple[str, ...], tuple[str, ...]]]  # major -> (required, optional)
    cuda_libs: dict[int, dict[str, int]]  # CUDA major -> family -> soname major
    wheels: dict[str, str]
    unsuffixed_since: int
    keep_suffix: tuple[str, ...]
    gpu: GpuTables | None = None  # rules/compat/gpu.toml (fixdnn.knowledge.gpu)
    dlopen_cudnn: dict[int, int] = field(default_factory=dict)  # CUDA major -> cuDNN major loaded by name
    # CUDA major -> (nvidia module, file) the JAX CUDA plugin loads by full path, in its order
    jax_preloads: dict[int, tuple[tuple[str, str], ...]] = field(default_factory=dict)

    def tf_build(self, version: str) -> TfBuild | None:
        try:
            v = Version(version)
        except InvalidVersion:
            return None
        for build in self.tf_builds:
            if (v.major, v.minor) == (build.version.major, build.version.minor):
                return build
        return None

    def torch_wheel(self, version: str) -> TorchWheel | None:
        try:
            v = Version(version)
        except InvalidVersion:
            return None
        for wheel in self.torch_wheels:
            if (v.major, v.minor) == (wheel.version.major, wheel.version.minor):
                return wheel
        return None

    def jax_minimum(self, plugin_version: str, cuda_major: int) -> JaxMinimum | None:
        try:
            v = Version(plugin_version)
        except InvalidVersion:
            return None
        rows = [m for m in self.jax_minimums if m.since <= v and m.cuda_major <= cuda_major]
        return max(rows, key=lambda m: (m.since, m.cuda_major), default=None)

    def wheel_for(self, family: str, cuda_major: int) -> str:
        base = family if family in self.wheels else "cudnn"
        name = self.wheels[base].format(major=cuda_major)
        if cuda_major >= self.unsuffixed_since and base not in self.keep_suffix:
            name = name.rsplit("-cu", 1)[0]
        return name


def load(directory: Path | None = None) -> Compat:
    return _load(str(directory or rules_dir() / "compat"))


@lru_cache(maxsize=4)
def _load(directory: str) -> Compat:
    from fixdnn.knowledge import gpu as gpu_tables

    base = Path(directory)
    tf_path = base / "tensorflow.toml"
    tf, tf_text = load_toml(tf_path)
    tf_builds = tuple(
        TfBuild(
            version=_field(tf_path, tf_text, row, at, "version"),
            cudnn=_field(tf_path, tf_text, row, at, "cudnn"),
            cuda=_field(tf_path, tf_text, row, at, "cuda"),
            and_cuda=dict(row.get("and_cuda", {})),
        )
        for row, at in entries(tf_path, tf_text, tf, "build")
    )
    torch_path = base / "torch.toml"
    torch, torch_text = load_toml(torch_path)
    torch_wheels = tuple(
        TorchWheel(
            version=_field(torch_path, torch_text, row, at, "version"),
            cuda=_field(torch_path, torch_text, row, at, "cuda"),
            cudnn_pin=str(need(torch_path, torch_text, row, "cudnn_pin", str, at=at)),
        )
        for row, at in entries(torch_path, torch_text, torch, "wheel")
    )
    jax_path = base / "jax.toml"
    jax, jax_text = load_toml(jax_path)
    jax_minimums = tuple(
        JaxMinimum(
            since=_field(jax_path, jax_text, row, at, "since"),
            cuda_major=int(need(jax_path, jax_text, row, "cuda_major", int, at=at)),
            cudnn=_field(jax_path, jax_text, row, at, "cudnn"),
        )
        for row, at in entries(jax_path, jax_text, jax, "minimum")
    )
    jax_preloads = {}
    for row, at in (entries(jax_path, jax_text, jax, "preload") if "preload" in jax else ()):
        pairs = need(jax_path, jax_text, row, "libraries", list, at=at)
        if not all(isinstance(p, list) and len(p) == 2 and all(isinstance(s, str) for s in p) for p in pairs):
            raise RulesError(f"{jax_path}:{line_of(jax_text, 'libraries', at)}: libraries must be "
                             "[\"module\", \"file\"] pairs")
        jax_preloads[int(need(jax_path, jax_text, row, "cuda_major", int, at=at))] = tuple(tuple(p) for p in pairs)
    drv_path = base / "driver.toml"
    drv, drv_text = load_toml(drv_path)
    floor = {
        int(need(drv_path, drv_text, row, "cuda_major", int, at=at)): str(need(drv_path, drv_text, row, "driver", str, at=at))
        for row, at in entries(drv_path, drv_text, drv, "floor")
    }
    lib_path = base / "libraries.toml"
    libs, lib_text = load_toml(lib_path)
    cudnn_sets = {
        int(major): (tuple(spec.get("required", ())), tuple(spec.get("optional", ())))
        for major, spec in need(lib_path, lib_text, libs, "cudnn", dict).items()
    }
    cuda_libs = {int(m): dict(spec) for m, spec in need(lib_path, lib_text, libs, "cuda", dict).items()}
    dlopen_cudnn = {int(m): int(v) for m, v in dict(libs.get("dlopen_cudnn", {})).items()}
    wheels = dict(need(lib_path, lib_text, libs, "wheels", dict))
    unsuffixed = int(wheels.pop("unsuffixed_since", 99))
    return Compat(
        tf_distributions=tuple(tf.get("distributions", ("tensorflow",))),
        tf_builds=tf_builds,
        torch_wheels=torch_wheels,
        jax_plugins=tuple(jax.get("plugins", ())),
        jax_minimums=jax_minimums,
        driver_floor=floor,
        cudnn_sets=cudnn_sets,
        cuda_libs=cuda_libs,
        wheels=wheels,
        unsuffixed_since=unsuffixed,
        dlopen_cudnn=dlopen_cudnn,
        jax_preloads=jax_preloads,
        keep_suffix=tuple(libs.get("wheels_keep_suffix", {}).get("families", ("cudnn",))),
        gpu=gpu_tables.load(base) if (base / "gpu.toml").is_file() else None,
    )
