"""Environment changes as data: ``<prefix>/etc/fixdnn/env.toml``.

The file holds ordered operations on environment variables::

    version = 1

    [[ops]]
    op = "path-prepend"          # set | unset | path-prepend | path-remove
    name = "LD_LIBRARY_PATH"
    value = "/opt/env/lib/python3.11/site-packages/nvidia/cudnn/lib"
    reason = "torch needs cuDNN 9 from the nvidia-cudnn-cu12 wheel"
    fixes = "cudnn-not-found"

``value`` is the new value for ``set``, the directory for the ``path-*`` operations, and absent for
``unset``. ``[[preload]]`` tables name library copies the in-process hook (``fixdnn.shell.preload``) loads
by absolute path before a framework is imported; shells ignore them::

    [[preload]]
    path = "/opt/cudnn/lib/libcudnn.so.9"
    reason = "..."
    fixes = "cudnn-not-on-search-path"
 Everything is validated when loaded or built, so renderers only ever see safe names and
absolute directories. :func:`apply_ops` is the pure Python model of what the rendered scripts do.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fixdnn.base.atomic import write_atomic

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

OPS = ("set", "unset", "path-prepend", "path-remove")
FORMAT_VERSION = 1
ENV_TOML = Path("etc", "fixdnn", "env.toml")

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Names a shell owns or refuses to assign (bash/zsh read-only or special, fish read-only), and
# fixdnn's own bookkeeping prefix.
_RESERVED = frozenset(
    "_ PWD OLDPWD SHLVL PPID UID EUID BASHOPTS SHELLOPTS BASH_VERSINFO FISH_VERSION "
    "status pipestatus argv history version hostname fish_pid umask status_generation path".split()
)


# Search-path variables: every entry of a value fixdnn sets must be an absolute directory (an empty or
# relative entry makes the loader or Python search the current folder).
SEARCH_PATHS = frozenset({"LD_LIBRARY_PATH", "PATH", "PYTHONPATH", "LIBRARY_PATH", "CUDA_PATH", "CUDA_HOME"})
# Variables fixdnn never sets or extends: each forces code into every process started from the shell.
NEVER_SET = frozenset({"LD_PRELOAD", "LD_AUDIT", "PYTHONSTARTUP", "PYTHONHOME", "BASH_ENV", "ENV"})


class EnvFileError(ValueError):
    """An env.toml that fixdnn refuses to load or write; the message is one line."""


def _one_line(text: str) -> str:
    return repr(text) if any(c in text for c in "\n\r") else f"'{text}'"


@dataclass(frozen=True)
class EnvOp:
    """One change to one variable, with why fixdnn makes it."""

    op: str
    name: str
    value: str | None = None
    reason: str = ""
    fixes: str = ""

    def __post_init__(self) -> None:
        problem = self._problem()
        if problem:
            raise EnvFileError(f"{self.op} {self.name}: {problem}")

    def _problem(self) -> str | None:  # noqa: PLR0911 - one check per rule reads best
        if self.op not in OPS:
            return f"unknown operation (expected one of {', '.join(OPS)})"
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            return f"invalid variable name {_one_line(str(self.name))}"
        if self.name in _RESERVED or self.name.upper().startswith("_FIXDNN"):
            return "this variable is reserved and cannot be changed by fixdnn"
        for label, text in (("reason", self.reason), ("fixes", self.fixes)):
            if not isinstance(text, str) or "\0" in text:
                return f"{label} must be text without NUL"
        if self.op == "unset":
            return None if self.value is None else "unset takes no value"
        if self.name in NEVER_SET and self.op in ("set", "path-prepend"):
            return ("fixdnn never sets this variable (it puts code into every process); a library to load "
                    "first goes through the environment's in-process preload instead")
        if not isinstance(self.value, str):
            return "a value is required"
        if "\0" in self.value:
            return "value contains a NUL byte"
        try:
            self.value.encode("utf-8")
        except UnicodeEncodeError:
            return "value is not valid Unicode text"
        if self.op.startswith("path-"):
            if not self.value:
                return "directory is empty (an empty entry means the current directory)"
            if not self.value.startswith("/"):
                return f"directory {_one_line(self.value)} is relative; use an absolute path"
            if ":" in self.value:
                return f"directory {_one_line(self.value)} contains ':', which splits path lists"
        elif self.name in SEARCH_PATHS:
            for entry in self.value.split(":"):
                if not entry:
                    return "has an empty entry (an empty entry means the current directory)"
                if not entry.startswith("/"):
                    return f"entry {_one_line(entry)} is relative; use absolute paths"
        return None

    def to_dict(self) -> dict[str, str]:
        out = {"op": self.op, "name": self.name}
        if self.value is not None:
            out["value"] = self.value
        out["reason"] = self.reason
        out["fixes"] = self.fixes
        return out


@dataclass(frozen=True)
class Preload:
    """One library copy to load first, by absolute path, inside every process of the environment."""

    path: str
    reason: str = ""
    fixes: str = ""

    def __post_init__(self) -> None:
        problem = None
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            problem = "the library path must be absolute"
        elif any(c in self.path for c in "\0\n\r"):
            problem = "the library path contains a NUL or a line break"
        elif not isinstance(self.reason, str) or not isinstance(self.fixes, str):
            problem = "reason and fixes must be text"
        if problem:
            raise EnvFileError(f"preload {_one_line(str(self.path))}: {problem}")

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason, "fixes": self.fixes}


@dataclass(frozen=True)
class EnvFile:
    """The ordered operations of one environment, and the copies its processes preload."""

    ops: tuple[EnvOp, ...] = field(default_factory=tuple)
    preloads: tuple[Preload, ...] = field(default_factory=tuple)

    @staticmethod
    def path_for(prefix: str | os.PathLike[str]) -> Path:
        return Path(prefix) / ENV_TOML

    @classmethod
    def loads(cls, text: str, source: str = "env.toml") -> EnvFile:
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover
            import tomli as tomllib
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise EnvFileError(f"{source}: not valid TOML: {e}") from e
        version = data.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise EnvFileError(f"{source}: unsupported version {version!r} (expected {FORMAT_VERSION})")
        stray = sorted(set(data) - {"version", "ops", "preload"})
        if stray:  # a typo such as [[op]] must not silently mean "no changes"
            raise EnvFileError(f"{source}: unknown key {stray[0]!r} (expected 'version', [[ops]] and [[preload]] tables)")
        raw_ops = data.get("ops", [])
        if not isinstance(raw_ops, list):
            raise EnvFileError(f"{source}: 'ops' must be an array of tables ([[ops]])")
        ops = []
        for i, raw in enumerate(raw_ops, 1):
            if not isinstance(raw, dict):
                raise EnvFileError(f"{source}: ops #{i}: must be a table")
            unknown = set(raw) - {"op", "name", "value", "reason", "fixes"}
            if unknown:
                raise EnvFileError(f"{source}: ops #{i}: unknown keys {', '.join(sorted(unknown))}")
            try:
                ops.append(EnvOp(**{k: raw.get(k) for k in ("op", "name", "value")},
                                 reason=raw.get("reason", ""), fixes=raw.get("fixes", "")))
            except EnvFileError as e:
                raise EnvFileError(f"{source}: ops #{i} ({e})") from None
        return cls(tuple(ops), _preloads(data.get("preload", []), source))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EnvFile:
        """Read and validate; a missing file is an empty ``EnvFile``."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return cls()
        except UnicodeDecodeError as e:
            raise EnvFileError(f"{path}: not UTF-8 text: {e}") from e
        return cls.loads(text, source=str(path))

    def dumps(self) -> str:
        lines = [
            "# fixdnn: environment changes for this environment, applied in order.",
            "# Written by fixdnn; the shell scripts next to this file are rendered from it.",
            f"version = {FORMAT_VERSION}",
        ]
        for op in self.ops:
            lines += ["", "[[ops]]"]
            lines += [f"{key} = {toml_string(val)}" for key, val in op.to_dict().items()]
        for pre in self.preloads:
            lines += ["", "[[preload]]"]
            lines += [f"{key} = {toml_string(val)}" for key, val in pre.to_dict().items()]
        return "\n".join(lines) + "\n"

    def dump(self, path: str | os.PathLike[str]) -> None:
        write_atomic(path, self.dumps(), make_parents=True)  # a crash never leaves half an env.toml


def _preloads(raw: object, source: str) -> tuple[Preload, ...]:
    if not isinstance(raw, list):
        raise EnvFileError(f"{source}: 'preload' must be an array of tables ([[preload]])")
    out = []
    for i, item in enumerate(raw, 1):
        if not isinstance(item, dict):
            raise EnvFileError(f"{source}: preload #{i}: must be a table")
        unknown = set(item) - {"path", "reason", "fixes"}
        if unknown:
            raise EnvFileError(f"{source}: preload #{i}: unknown keys {', '.join(sorted(unknown))}")
        try:
            out.append(Preload(item.get("path"), item.get("reason", ""), item.get("fixes", "")))
        except EnvFileError as e:
            raise EnvFileError(f"{source}: preload #{i} ({e})") from None
    return tuple(out)


def toml_string(text: str) -> str:
    """A TOML basic string: escapes backslash, quote and every control character."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def touched_names(ops: Iterable[EnvOp]) -> list[str]:
    """Variable names the operations change, first-use order, each once."""
    return list(dict.fromkeys(op.name for op in ops))


def _entries(value: str | None) -> list[str]:
    return [e for e in (value or "").split(":") if e]


def apply_ops(environ: Mapping[str, str], ops: Iterable[EnvOp]) -> dict[str, str]:
    """Return a new environment with ``ops`` applied, exactly as the rendered scripts do.

    Path operations drop empty entries and duplicates (first one wins); a path list that ends up
    empty is unset rather than set to ``""``.
    """
    env = dict(environ)
    for op in ops:
        if op.op == "set":
            env[op.name] = op.value
        elif op.op == "unset":
            env.pop(op.name, None)
        else:
            kept = [op.value] if op.op == "path-prepend" else []
            for entry in _entries(env.get(op.name)):
                if entry != op.value and entry not in kept:
                    kept.append(entry)
            if kept:
                env[op.name] = ":".join(kept)
            else:
                env.pop(op.name, None)
    return env


__all__ = ["ENV_TOML", "OPS", "EnvFile", "EnvFileError", "EnvOp", "Preload", "apply_ops", "toml_string", "touched_names"]


def activated_environ(prefix: str | os.PathLike, environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` as the environment's activation scripts leave it (raises EnvFileError for a bad file)."""
    return apply_ops(environ, EnvFile.load(EnvFile.path_for(prefix)).ops)
