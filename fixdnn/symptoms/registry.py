"""The symptom registry: permanent codes, stable names, and the pure checks that find them.

A check is a pure function ``(facts, compat) -> iterable of Symptom``. Codes are never reused: a retired
check keeps its code in ``RETIRED`` so nobody hands it out again.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("error", "warning", "info")
RETIRED: dict[str, str] = {}

# One module per family; each registers its checks at import.
FAMILIES = ("cudnn", "cuda", "driver", "frameworks", "integrity", "openmp", "paths", "lockfile", "links", "gpu",
            "unknowns")


@dataclass(frozen=True)
class Symptom:
    code: str
    name: str
    severity: str
    summary: str
    evidence: dict[str, Any] = field(default_factory=dict)  # JSON-able, stable keys (the plan reads them)
    chain: tuple[str, ...] = ()  # the evidence a person follows, one step a line
    hint: str = ""  # what would fix it, in one line


@dataclass(frozen=True)
class Check:
    code: str
    name: str
    severity: str
    title: str
    doc: str
    run: Callable[..., Iterable[Symptom]]

    def make(self, summary: str, evidence: dict[str, Any] | None = None, *, chain: Iterable[str] = (),
             hint: str = "", severity: str | None = None) -> Symptom:
        sev = severity or self.severity
        if sev not in SEVERITIES:
            raise ValueError(f"{self.name}: unknown severity {sev!r}")
        return Symptom(self.code, self.name, sev, summary, dict(evidence or {}), tuple(chain), hint)


REGISTRY: dict[str, Check] = {}


def check(code: str, name: str, severity: str, title: str):
    """Register a check. The function's docstring is its documentation page."""

    def wrap(func):
        if code in RETIRED or any(c.code == code for c in REGISTRY.values()):
            raise ValueError(f"symptom code {code} is already taken")
        if name in REGISTRY:
            raise ValueError(f"symptom name {name} is already registered")
        if severity not in SEVERITIES:
            raise ValueError(f"{name}: unknown severity {severity!r}")
        spec = Check(code, name, severity, title, (func.__doc__ or "").strip(), func)
        REGISTRY[name] = spec
        func.spec = spec
        return func

    return wrap


def load_all() -> dict[str, Check]:
    for family in FAMILIES:
        importlib.import_module(f"fixdnn.symptoms.{family}")
    return REGISTRY


def diagnose(facts, compat, only: Iterable[str] | None = None) -> tuple[Symptom, ...]:
    """Run every registered check, in code order. A check that crashes is itself reported, not raised."""
    load_all()
    wanted = set(only) if only is not None else None
    found: list[Symptom] = []
    for spec in sorted(REGISTRY.values(), key=lambda c: c.code):
        if wanted is not None and spec.name not in wanted:
            continue
        try:
            found.extend(spec.run(facts, compat))
        except Exception as exc:  # a bug in one check must not hide the others
            found.append(Symptom("FDN000", "check-failed", "warning",
                                 f"the {spec.name} check failed: {exc.__class__.__name__}: {exc}",
                                 {"check": spec.name}))
    return tuple(found)


def has_errors(symptoms: Iterable[Symptom]) -> bool:
    return any(s.severity == "error" for s in symptoms)


def load_rules(extra=(), **kwargs):
    """The remedy and error rules (:func:`fixdnn.knowledge.rules.load`), each checked to name a known symptom."""
    from fixdnn.knowledge import rules as rules_mod

    return rules_mod.load(extra, known=set(load_all()), **kwargs)
