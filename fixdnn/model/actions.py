"""Plan actions: inert values until the transaction executes them. Each can describe itself exactly.

Environment actions (``env-set``, ``env-unset``, ``path-prepend``, ``path-remove``) are persisted in the
environment's ``etc/fixdnn/env.toml`` and rendered into its activation scripts and its in-process hook
(``fixdnn.shell``); ``preload`` (a library copy loaded by absolute path in every Python process of the
environment before a framework is imported) lives in the same file. Pip actions run the *target's*
installer with exact pins.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

KINDS = ("pip-install", "pip-uninstall", "env-set", "env-unset", "path-prepend", "path-remove", "preload", "write-file",
         "manual")
ENV_KINDS = ("env-set", "env-unset", "path-prepend", "path-remove")
PERSISTED_KINDS = (*ENV_KINDS, "preload")  # the actions that live in etc/fixdnn/env.toml
REQUIREMENTS = "fixdnn-requirements.txt"  # the file a hash-pinned step's shown command writes


@dataclass(frozen=True)
class Action:
    kind: str
    fixes: tuple[str, ...] = ()  # symptom names this action is meant to remove
    reason: str = ""  # why this remedy (and why it was preferred)
    remedy: str = ""  # the id of the rule that produced it
    packages: tuple[str, ...] = ()  # pip-install: exact pins "name==1.2.3"; pip-uninstall: names
    pip_args: tuple[str, ...] = ()  # extra installer arguments (--only-binary=:all:, --require-hashes ...)
    name: str | None = None  # environment variable
    value: str | None = None  # env-set value, or the directory of a path-* action
    path: str | None = None  # write-file target; preload: the library file
    content: str | None = None  # write-file content
    text: str | None = None  # manual: exactly what to do, in words
    available: bool | None = None  # pip steps: checked against the index (None = not checked)
    check: str = ""  # how availability was checked, or why it is unavailable
    hashes: tuple[str, ...] = ()  # pip-install: "name==version sha256:<hex>" where the index gave one
    installer: tuple[str, ...] = ()  # pip steps: the installer argv when not "<python> -m pip" (e.g. uv pip)
    proven: bool | None = None  # the planner applied it in the model: True = its symptom is gone there
    proof: str = ""  # what the model showed ("in the model: removes cudnn-missing (torch)"), or why not proven

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown action kind {self.kind!r} (expected one of {', '.join(KINDS)})")

    def hashed_pins(self) -> dict[str, str] | None:
        """{pin: sha256} when this install can run in pip's hash-checking mode: it installs no dependencies
        (``--no-deps``) and the index gave a hash for every pin. None otherwise."""
        if self.kind != "pip-install" or "--no-deps" not in self.pip_args or not self.packages:
            return None
        known = dict(h.split(" sha256:", 1) for h in self.hashes if " sha256:" in h)
        return known if all(p in known for p in self.packages) else None

    def key(self) -> tuple:
        """Identity for de-duplication: the same change, whoever asked for it."""
        return (self.kind, self.packages, self.name, self.value, self.path, self.content, self.text)

    def command(self, python: str | None = None) -> str | None:
        """The exact installer command line (``installer`` is how the plan's installer is run)."""
        if self.kind not in ("pip-install", "pip-uninstall"):
            return None
        head = list(self.installer) if self.installer else [python or "python", "-m", "pip"]
        is_uv = os.path.basename(head[0]) == "uv"
        verb = ["install"] if self.kind == "pip-install" else (["uninstall"] if is_uv else ["uninstall", "-y"])
        target = ["--python", python or "python"] if is_uv else []  # uv takes --python after the verb
        args = list(self.pip_args) if self.kind == "pip-install" else []
        if self.hashed_pins():
            # apply writes the pins with their sha256 to a requirements file (pip takes hashes only there);
            # shown as the file written, then the install: both paste into any POSIX shell as they are
            lines = [f"{p} --hash=sha256:{h}" for p, h in self.hashed_pins().items()]
            return "printf '%s\\n' " + " ".join(map(shlex.quote, lines)) + f" > {REQUIREMENTS} && " + \
                " ".join(map(shlex.quote, [*head, *verb, *target, *args, "--require-hashes", "-r", REQUIREMENTS]))
        return " ".join(map(shlex.quote, [*head, *verb, *target, *args, *self.packages]))

    def describe(self, python: str | None = None) -> str:
        """One exact line: the command, the variable change, the file written, or the manual step."""
        if self.kind in ("pip-install", "pip-uninstall"):
            return self.command(python) or ""
        if self.kind == "env-set":
            return f"set {self.name}={shlex.quote(self.value or '')} in the environment's activation scripts"
        if self.kind == "env-unset":
            return f"unset {self.name} in the environment's activation scripts"
        if self.kind == "path-prepend":
            return f"prepend {shlex.quote(self.value or '')} to {self.name} in the environment's activation scripts"
        if self.kind == "path-remove":
            return f"remove {shlex.quote(self.value or '')} from {self.name} in the environment's activation scripts"
        if self.kind == "preload":
            return (f"preload {shlex.quote(self.path or '')} in the environment's Python processes before a "
                    "framework is imported (in-process hook)")
        if self.kind == "write-file":
            return f"write {shlex.quote(self.path or '')}"
        return f"manual: {self.text}"


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    notes: tuple[str, ...] = ()  # alternatives offered, conflicts, remedies rejected and why
    unfixed: tuple[str, ...] = ()  # symptom names no remedy applies to
    # (symptom, remedy id, status) for every candidate the planner looked at: chosen, or why not
    alternatives: tuple[tuple[str, str, str], ...] = ()

    @property
    def runnable(self) -> bool:
        return all(a.available is not False for a in self.actions)

    @property
    def unproven(self) -> tuple[Action, ...]:
        """Steps fixdnn would carry out that the model did not show to remove their symptom."""
        return tuple(a for a in self.actions if a.kind != "manual" and a.proven is False)
