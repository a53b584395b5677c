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
                   "chosen_because": t.chosen_because,
                   "startup_code": list(t.startup_code)},
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


def render_text(report: Report, console, *, verbose: bool = False, quiet: bool = False) -> None:
    """Human output: the target and why, one line per framework, one block per symptom with its
    deciding evidence (``verbose``: every loader step). ``quiet``: only errors, warnings and unknowns.
    Lines are wrapped for a terminal without breaking inside a name; in a pipe they are never wrapped."""
    from rich.markup import escape

    from fixdnn.cli.layout import concise_chain, wrap

    width = console.width if console.is_terminal else None

    def say(text: str, *, indent: int = 0, style: str = "", head: str = "", head_style: str = "") -> None:
        """Print ``text`` wrapped; ``head`` (a prefix of text) and the whole line may carry a style."""
        for n, line in enumerate(wrap(text, width, indent)):
            shown = escape(line)
            if n == 0 and head and head_style and line.startswith(" " * indent + head):
                cut = indent + len(head)
                shown = f"{' ' * indent}[{head_style}]{escape(head)}[/]{escape(line[cut:])}"
            console.print(f"[{style}]{shown}[/]" if style else shown, soft_wrap=True, highlight=False)

    facts = report.facts
    t = facts.target
    shown_symptoms = [s for s in report.symptoms if not quiet or s.severity != "info"]
    if not quiet:
        say(f"fixdnn {t.kind} environment {t.prefix or '?'} (Python {t.python_version or '?'})",
            head="fixdnn", head_style="bold")
        if t.chosen_because:
            say(f"chosen because: {t.chosen_because}", style="dim")
        for fw in facts.frameworks:
            entry = _framework_entry(facts, fw)
            cudnn = entry["cudnn"]
            if cudnn is None:
                say(f"{fw.name} {fw.version}: " + ("CPU build" if not fw.gpu_build else "no cuDNN needed"))
                continue
            req = cudnn["required"]
            needs = f"cuDNN {req['minimum'] + '+' if req['minimum'] else str(req['major']) + '.x'}"
            if cudnn["resolved_path"]:
                say(f"{fw.name} {fw.version}: needs {needs}, loads {cudnn['resolved_path']} "
                    f"({cudnn['resolved_version'] or '?'})")
            else:
                say(f"{fw.name} {fw.version}: needs {needs}, not found", style="red")
        if not facts.frameworks:
            say("no deep-learning framework found in this environment")
        if facts.driver:
            say(f"NVIDIA driver {facts.driver.version or '?'} ({facts.driver.source or ''})")
        for gpu in facts.gpu.gpus if facts.gpu else ():
            cc = f"compute capability {gpu.compute_capability}" if gpu.compute_capability else "capability unknown"
            say(f"GPU {gpu.name or gpu.bus_id or '?'}: {cc} ({gpu.cc_source or gpu.source})")
        for kernels in facts.gpu.kernels if facts.gpu else ():
            archs = ", ".join(kernels.sass + kernels.ptx)
            if archs:
                say(f"{kernels.framework} {kernels.version} has kernels for {archs}")
        if not report.symptoms:
            console.print("[green]healthy:[/green] no problem found")
    for s in shown_symptoms:
        if not quiet:
            console.print()
        head = f"{s.severity} {s.code} {s.name}"
        say(f"{head}: {s.summary}", head=head, head_style=_STYLE[s.severity])
        if quiet:
            continue
        for line in (s.chain if verbose else concise_chain(s.chain)):
            say(f"  • {line}", indent=2)
        if s.hint:
            say(f"  fix: {s.hint}", indent=2, head="fix:", head_style="bold")
    for line in t.startup_code:
        say(f"runs at every start of this python (diagnosis did not run it): {line}", style="dim")
    for u in facts.unknowns:
        say(f"unknown: {u.what}: {u.reason}", style="dim")
    counts = {sev: sum(1 for s in report.symptoms if s.severity == sev) for sev in ("error", "warning", "info")}
    if report.symptoms and not quiet:
        console.print()
        console.print(f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} note(s)")
