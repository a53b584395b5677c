"""The diagnosis report: one value built from facts and symptoms, rendered as JSON or for a person.

The JSON shape is a contract (``fixdnn.report/1``): keys are only ever added, never renamed or removed.
Every object is built field by field here, never by dumping an internal dataclass, so renaming a field
inside fixdnn cannot change what users' scripts read (the schema: ``fixdnn.cli.schemas``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fixdnn.model.facts import Facts
from fixdnn.symptoms.registry import Symptom, has_errors

REPORT_SCHEMA = "fixdnn.report/1"


@dataclass(frozen=True)
class Report:
    facts: Facts
    symptoms: tuple[Symptom, ...]
    extra: dict[str, Any] | None = None  # later stages (the plan) add their own top-level keys

    @property
    def exit_code(self) -> int:
        return 1 if has_errors(self.symptoms) else 0


def _framework_entry(facts: Facts, fw) -> dict:
    need = next((n for n in fw.needs if n.library == "cudnn"), None)
    outcome = next((o for o in facts.loads_of(fw.name) if o.library == "cudnn"), None)
    copy = facts.copy_at(outcome.path) if outcome else None
    cudnn = None
    if need is not None:
        cudnn = {
            "required": {"major": need.major, "minimum": need.minimum, "pin": need.pin, "source": need.source},
            "resolved_path": outcome.path if outcome else None,
            "resolved_version": copy.version if copy else None,
            "chain": (list(outcome.preload) + outcome.resolution.explain()) if outcome else [],
        }
    return {
        "name": fw.name,
        "distribution": fw.distribution,
        "version": fw.version,
        "gpu_build": fw.gpu_build,
        "cuda": fw.cuda,
        "cudnn": cudnn,
        "needs": [{"library": n.library, "major": n.major, "minimum": n.minimum, "pin": n.pin, "source": n.source,
                   "wheel": n.wheel} for n in fw.needs],
        "notes": list(fw.notes),
    }


def symptom_entry(s: Symptom) -> dict:
    return {"code": s.code, "name": s.name, "severity": s.severity, "summary": s.summary, "evidence": s.evidence,
            "chain": list(s.chain), "hint": s.hint}


def _library_entry(c) -> dict:
    return {"family": c.family, "path": c.path, "realpath": c.realpath, "soname": c.soname, "version": c.version,
            "version_source": c.version_source, "owner": c.owner, "found_in": list(c.found_in), "error": c.error,
            "aliases": list(c.aliases)}


def to_dict(report: Report) -> dict:
    facts = report.facts
    t = facts.target
    out = {
        "schema": REPORT_SCHEMA,
        "target": {"python": t.python, "python_version": t.python_version, "prefix": t.prefix, "kind": t.kind,
                   "chosen_because": t.chosen_because},
        "frameworks": [_framework_entry(facts, fw) for fw in facts.frameworks],
        "libraries": [_library_entry(c) for c in facts.libraries],
        "driver": {"version": facts.driver.version, "source": facts.driver.source} if facts.driver else None,
        "symptoms": [symptom_entry(s) for s in report.symptoms],
        "unknowns": [{"what": u.what, "reason": u.reason} for u in facts.unknowns],
    }
    if report.extra:
        out.update(report.extra)
    return out


_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def render_text(report: Report, console) -> None:
    """Human output with rich: one line when healthy, an inventory table, one block per symptom."""
    from rich.markup import escape
    from rich.table import Table

    facts = report.facts
    t = facts.target
    console.print(f"[bold]fixdnn[/bold] {escape(t.kind)} environment "
                  f"{escape(t.prefix or '?')} (Python {escape(t.python_version or '?')})")
    if t.chosen_because:
        console.print(f"[dim]chosen because: {escape(t.chosen_because)}[/dim]")
    if facts.frameworks:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("framework")
        table.add_column("needs")
        table.add_column("resolved copy", overflow="fold")
        for fw in facts.frameworks:
            entry = _framework_entry(facts, fw)
            cudnn = entry["cudnn"]
            if cudnn is None:
                needs, resolved = ("CPU build" if not fw.gpu_build else "no cuDNN"), "-"
            else:
                req = cudnn["required"]
                needs = f"cuDNN {req['minimum'] + '+' if req['minimum'] else str(req['major']) + '.x'}"
                resolved = (f"{cudnn['resolved_path']} ({cudnn['resolved_version'] or '?'})"
                            if cudnn["resolved_path"] else "[red]not found[/red]")
            table.add_row(escape(f"{fw.name} {fw.version}"), escape(needs),
                          resolved if resolved.startswith("[red]") else escape(resolved))
        console.print(table)
    else:
        console.print("no deep-learning framework found in this environment")
    if facts.driver:
        console.print(f"NVIDIA driver {escape(facts.driver.version or '?')} ({escape(facts.driver.source or '')})")
    if not report.symptoms:
        console.print("[green]healthy:[/green] no problem found")
    for s in report.symptoms:
        console.print()
        console.print(f"[{_STYLE[s.severity]}]{s.severity} {s.code} {s.name}[/]: {escape(s.summary)}")
        for line in s.chain:
            console.print(f"  [dim]•[/dim] {escape(line)}")
        if s.hint:
            console.print(f"  [bold]fix:[/bold] {escape(s.hint)}")
    for u in facts.unknowns:
        console.print(f"[dim]unknown: {escape(u.what)}: {escape(u.reason)}[/dim]")
    counts = {sev: sum(1 for s in report.symptoms if s.severity == sev) for sev in ("error", "warning", "info")}
    if report.symptoms:
        console.print()
        console.print(f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} note(s)")
