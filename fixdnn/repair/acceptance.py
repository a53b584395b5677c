"""After the last step: diagnose again and decide whether the repair is accepted.

Accepted when every symptom the executed actions meant to fix (``Action.fixes``) is gone and no
error-level symptom appeared that was not there before. Manual actions are not executed, so what they
fix is not required. :func:`judge` is pure; :func:`rediagnose` gathers fresh facts of the target with the
environment the activation scripts now produce (``etc/fixdnn/env.toml`` applied to ``environ``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterable, Mapping

if TYPE_CHECKING:
    from fixdnn.model.actions import Plan


def judge(plan: Plan, before: Iterable, after: Iterable) -> list[str]:
    """Reasons the result is not acceptable (empty list: accepted)."""
    before = list(before)
    after = list(after)
    meant = {name for a in plan.actions if a.kind != "manual" for name in a.fixes}
    still = sorted({s.name for s in after if s.name in meant})
    old_errors = {s.name for s in before if s.severity == "error"}
    new = sorted({s.name for s in after if s.severity == "error" and s.name not in old_errors and s.name not in meant})
    problems = []
    if still:
        problems.append("still present: " + ", ".join(still))
    if new:
        problems.append("new error: " + ", ".join(new))
    return problems


def rediagnose(prefix: str, python: str | None, environ: Mapping[str, str] | None = None):
    """Fresh facts and symptoms of the target, as it is after the transaction."""
    from fixdnn.facts import gather
    from fixdnn.knowledge import compat
    from fixdnn.shell.envfile import activated_environ
    from fixdnn.symptoms.registry import diagnose
    from fixdnn.target.host import Host
    from fixdnn.target.interpreter import TargetSpec

    env = activated_environ(prefix, dict(os.environ if environ is None else environ))
    facts = gather(Host(environ=env), TargetSpec(python=python, prefix=prefix if python is None else None))
    return diagnose(facts, compat.load())


def verifier(plan: Plan, before: Iterable, prefix: str, python: str | None,
             environ: Mapping[str, str] | None = None):
    """The ``verify`` callback for :func:`fixdnn.repair.apply.apply_plan`."""
    before = list(before)
    return lambda: judge(plan, before, rediagnose(prefix, python, environ))
