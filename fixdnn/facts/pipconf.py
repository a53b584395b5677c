"""pip's configuration, read the way pip reads it, without starting pip (``pip config list`` costs 0.2-0.5 s
of start-up for a handful of INI lines).

The files, in pip's load order (a later file wins key by key):

1. global: ``pip/pip.conf`` in each ``$XDG_CONFIG_DIRS`` folder (default ``/etc/xdg``), then ``/etc/pip.conf``;
2. user: ``~/.pip/pip.conf``, then ``$XDG_CONFIG_HOME/pip/pip.conf`` (default ``~/.config``) - skipped when
   ``$PIP_CONFIG_FILE`` names an existing file, or in isolated mode;
3. site: ``pip.conf`` in the prefix of the interpreter pip runs in (the target's);
4. ``$PIP_CONFIG_FILE``; when it is ``/dev/null`` no file at all is read.

Then the ``PIP_<NAME>`` variables, which beat every file (section ``:env:``). Keys are normalised as pip does
(lower case, ``_`` -> ``-``). An unreadable or malformed file is skipped and named in ``problems``: pip itself
refuses to run with it, which the installer's own check then reports.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass

_IGNORED_VARS = {"version", "help"}  # pip's own exceptions: PIP_VERSION and PIP_HELP are not options


@dataclass(frozen=True)
class PipSettings:
    values: dict[str, dict[str, str]]  # option name -> {section: value}; sections "global", "install", ":env:"
    files: tuple[str, ...]  # the files that were read, in order
    problems: tuple[str, ...] = ()  # "path: reason" for files pip would choke on


def normalise(name: str) -> str:
    return name.lower().replace("_", "-")


def truthy(value: str | None) -> bool:
    """A boolean option's value as pip reads it (its strtobool)."""
    return (value or "").strip().lower() in ("1", "true", "t", "yes", "y", "on")


def config_files(environ: Mapping[str, str], prefix: str | None, exists=os.path.exists) -> list[str]:
    """Every file pip would try, in load order (missing ones included: the caller skips them)."""
    env_file = environ.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:
        return []
    home = environ.get("HOME") or ""
    xdg_dirs = [d for d in (environ.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(os.pathsep) if os.path.isabs(d)]
    files = [os.path.join(d, "pip", "pip.conf") for d in xdg_dirs] + ["/etc/pip.conf"]
    isolated = truthy(environ.get("PIP_ISOLATED_MODE"))
    if not isolated and not (env_file and exists(env_file)) and home:
        xdg_home = environ.get("XDG_CONFIG_HOME") or ""
        xdg_home = xdg_home if os.path.isabs(xdg_home) else os.path.join(home, ".config")
        files += [os.path.join(home, ".pip", "pip.conf"), os.path.join(xdg_home, "pip", "pip.conf")]
    if prefix:
        files.append(os.path.join(prefix, "pip.conf"))
    if env_file:
        files.append(env_file)
    return files


def read(host, prefix: str | None) -> PipSettings:
    """pip's settings for an install into ``prefix``, from ``host``'s files and environment."""
    values: dict[str, dict[str, str]] = {}
    read_files: list[str] = []
    problems: list[str] = []
    for path in config_files(host.environ, prefix, host.exists):
        if not host.is_file(path):
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read_string(host.read_text(path, limit=1 << 20), source=path)
        except Exception as exc:  # HostError, configparser.Error: pip stops on these; we name them
            problems.append(f"{path}: {str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__}")
            continue
        read_files.append(path)
        for section in parser.sections():
            for key, value in parser.items(section):
                values.setdefault(normalise(key), {})[section] = value
    if not truthy(host.environ.get("PIP_ISOLATED_MODE")):
        for key, value in host.environ.items():
            name = normalise(key[4:]) if key.startswith("PIP_") else ""
            if name and name not in _IGNORED_VARS:
                values.setdefault(name, {})[":env:"] = value
    return PipSettings(values, tuple(read_files), tuple(problems))


__all__ = ["PipSettings", "config_files", "normalise", "read", "truthy"]
