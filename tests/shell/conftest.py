"""Real-shell test kit: find shells (skip locally, fail under CI), run scripts, read ``env -0`` dumps.

Paths and values reach the scripts through environment variables (``$T``, ``$A``, ...), so the tests
themselves never quote anything; quoting is what is under test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

POSIX = ("bash", "zsh", "dash")
ALL = (*POSIX, "fish")
# Variables the shells or the harness change on their own.
NOISE = {"_", "PWD", "OLDPWD", "SHLVL", "T", "VENV", "A", "B", "ZDOTDIR", "fish_greeting", "LOGNAME", "USER"}  # zsh/fish export these
# A venv path the stock CPython templates can handle (they put the path in double quotes), and the
# full hostile path for which the tests re-quote the template's VIRTUAL_ENV line (see hostile_venv).
STOCK_HOSTILE = "we ird 'q' \n ünï🚒中 venv"
FULL_HOSTILE = "we ird 'q' \"dq\" $HOME `id` \\ \n ünï🚒中 $(x) venv"
HOSTILE_VALUE = "/usr/lib::/we ird $x `id` 'q' \"dq\" \\ \n ü:"


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def require_shell(name: str) -> str:
    """Path of shell ``name``; a missing shell skips the test locally and fails it under ``CI``."""
    path = shutil.which(name)
    if path:
        return path
    msg = f"{name} is not installed (apt-get install -y {name})"
    if in_ci():
        pytest.fail(f"{msg}; shells are required when CI is set", pytrace=False)
    pytest.skip(msg)
    return ""  # pragma: no cover


@dataclass(frozen=True)
class Shell:
    name: str
    path: str

    @property
    def fish(self) -> bool:
        return self.name == "fish"

    def argv(self, script: Path, interactive: bool = False) -> list[str]:
        if self.name == "bash":
            return [self.path, "--norc", "--noprofile", *(["-i"] if interactive else []), str(script)]
        if self.name == "zsh":
            return [self.path, "-f", *(["-i"] if interactive else []), str(script)]
        if self.fish:
            return [self.path, "--no-config", str(script)]
        return [self.path, str(script)]

    # --- tiny per-shell vocabulary, so each test is written once for all shells ---
    def source(self, expr: str) -> str:
        return f'source {expr}' if self.fish else f". {expr}"

    def export(self, name: str, expr: str) -> str:
        return f"set -gx {name} {expr}" if self.fish else f"{name}={expr}; export {name}"

    def unset(self, name: str) -> str:
        return f"set -e -g {name}" if self.fish else f"unset {name}"

    def activate(self, venv_var: str) -> str:
        return self.source(f'"${venv_var}/bin/activate.fish"' if self.fish else f'"${venv_var}/bin/activate"')


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        "FIXDNN_STATE_DIR": os.environ["FIXDNN_STATE_DIR"],  # the session's own (tests/conftest.py)
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "T": str(tmp_path),
        "VIRTUAL_ENV_DISABLE_PROMPT": "1",
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local/share"),
        "LD_LIBRARY_PATH": HOSTILE_VALUE,
        "EMPTY_ONE": "",
    }
    env.update(extra)
    return env


class Run:
    """Write ``lines`` to a script, run it, and return the ``env -0`` dumps taken by ``dump()``."""

    def __init__(self, shell: Shell, tmp_path: Path) -> None:
        self.shell, self.tmp_path, self.lines, self.n = shell, tmp_path, [], 0

    def add(self, *lines: str) -> Run:
        self.lines.extend(lines)
        return self

    def dump(self) -> Run:
        self.n += 1
        return self.add(f'env -0 > "$T/dump.{self.n}"')

    def go(self, env: dict[str, str], interactive: bool = False, stdin: bool = False) -> list[dict[str, str]]:
        for old in self.tmp_path.glob("dump.*"):
            old.unlink()
        script = self.tmp_path / f"script.{self.shell.name}"
        script.write_text("\n".join(self.lines) + "\n", encoding="utf-8")
        if stdin:  # interactive shells reading commands from stdin run their prompt hooks between lines
            argv = self.shell.argv(script, interactive=True)[:-1]
            proc = subprocess.run(argv, input=script.read_bytes(), env=env, capture_output=True,
                                  timeout=30, check=False, cwd=self.tmp_path)
        else:
            proc = subprocess.run(self.shell.argv(script, interactive), env=env, capture_output=True,
                                  timeout=30, check=False, cwd=self.tmp_path)
        self.stdout = proc.stdout.decode("utf-8", "replace")
        self.stderr = proc.stderr.decode("utf-8", "replace")
        dumps = []
        for i in range(1, self.n + 1):
            f = self.tmp_path / f"dump.{i}"
            assert f.exists(), f"{self.shell.name}: dump {i} missing\nstdout:{self.stdout}\nstderr:{self.stderr}"
            dumps.append(read_dump(f.read_bytes()))
        return dumps


def read_dump(raw: bytes) -> dict[str, str]:
    env = {}
    for item in raw.split(b"\0"):
        if item:
            k, _, v = item.decode("utf-8", "surrogateescape").partition("=")
            if k not in NOISE:
                env[k] = v
    return env


def strip_noise(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in NOISE}


@pytest.fixture(params=ALL)
def shell(request: pytest.FixtureRequest) -> Shell:
    return Shell(request.param, require_shell(request.param))


@pytest.fixture(params=POSIX)
def posix_shell(request: pytest.FixtureRequest) -> Shell:
    return Shell(request.param, require_shell(request.param))


def make_venv(parent: Path, name: str) -> Path:
    """``python -m venv --without-pip`` at ``parent/name``.

    CPython writes the path into the activate scripts in double quotes without escaping:
    ``VIRTUAL_ENV="..."`` up to 3.11, ``export VIRTUAL_ENV="..."`` (and a cygpath line) from 3.12, and
    ``set -gx VIRTUAL_ENV "..."`` for fish; releases with the quoting fix write a safely quoted path
    instead. With ``"``, ``$``, backslash or backticks in the name the unescaped form breaks the *stock*
    script before fixdnn's block runs, so every such occurrence is re-quoted, as fixed templates do;
    fixdnn's block never embeds a path.
    """
    prefix = parent / name
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--prompt", "v", str(prefix)], check=True)
    if any(c in name for c in '"$`\\'):
        import shlex

        from fixdnn.shell.render import quote_fish, quote_posix

        for script, quote in (("activate", quote_posix), ("activate.fish", quote_fish)):
            path = prefix / "bin" / script
            text = path.read_text(encoding="utf-8")
            raw = f'"{prefix}"'
            fixed = text.replace(raw, quote(str(prefix)))
            safe = (quote(str(prefix)), shlex.quote(str(prefix)))
            assert raw in text or any(q in text for q in safe), f"{script}: no VIRTUAL_ENV line this kit knows"
            path.write_text(fixed, encoding="utf-8")
    return prefix
