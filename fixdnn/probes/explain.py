"""``fixdnn explain``: from an error message (or a whole log) to the cause that holds *here* and its fix.

1. :func:`match_text` finds every known signature (``rules/errors.toml``, loaded by :mod:`fixdnn.knowledge.rules`) in
   a text, line by line, so a log with pages of noise around the error still matches; ANSI colours and
   carriage returns are removed first.
2. :func:`explain` takes those matches and, when a target could be diagnosed, the symptoms that hold in it:
   for each message, "this error means X; in this environment the cause is Y (evidence); the fix is Z"
   — Z being the actions ``fixdnn apply`` would plan for Y. Known noise (TensorFlow's "Unable to register
   cuDNN factory", the oneDNN and CPU-instruction notices...) is said to be harmless.

Pure apart from :func:`plan_for` (which loads the remedy rules); nothing here prints.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from fixdnn.knowledge.rules import ErrorSignature

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MAX_EXCERPT = 300


@dataclass(frozen=True)
class Match:
    signature: ErrorSignature
    line: int  # 1-based line where the first occurrence starts
    excerpt: str  # that line, shortened
    count: int = 1  # occurrences in the text
    groups: dict[str, str] = field(default_factory=dict)


def clean(text: str) -> str:
    return _ANSI.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def _compiled(sig: ErrorSignature) -> re.Pattern:
    # No DOTALL: in a log, '.*' must not run from one line into the next.
    return re.compile(sig.regex, re.M)


REGEX_SECONDS = 5.0  # a user's signature gets this long on one text


@dataclass(frozen=True)
class _Hit:
    """What match_text keeps of a re.Match (the same for a shipped regex and a bounded user one)."""

    span: tuple[int, int]
    groups: dict

    def start(self) -> int:
        return self.span[0]

    def end(self) -> int:
        return self.span[1]

    def groupdict(self) -> dict:
        return self.groups


_CHILD = """import json, re, sys
job = json.loads(sys.stdin.read())
out = {}
for sid, rx in job["sigs"]:
    out[sid] = [[m.start(), m.end(), m.groupdict()] for m in re.compile(rx, re.M).finditer(job["text"])]
sys.stdout.write(json.dumps(out))
"""


def _bounded(sigs: list[ErrorSignature], text: str) -> dict[str, list[_Hit]]:
    """Run user-written regexes in a child with a time limit: Python's re cannot be interrupted, and a
    pattern that backtracks catastrophically must cost five seconds and one line, not a hung fixdnn."""
    import json
    import subprocess
    import sys

    job = json.dumps({"sigs": [[s.id, s.regex] for s in sigs], "text": text})
    try:
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", _CHILD], input=job, capture_output=True, text=True,
                              timeout=REGEX_SECONDS, cwd="/")
        data = json.loads(proc.stdout)
    except subprocess.TimeoutExpired:
        from fixdnn.knowledge.compat import RulesError

        where = ", ".join(f"{s.id} ({s.source})" for s in sigs)
        raise RulesError(f"a user error signature took over {REGEX_SECONDS:g} s on this text (a regex that "
                         f"backtracks catastrophically?): {where}; fix or remove it") from None
    except ValueError:
        data = {}
    return {sid: [_Hit((a, b), g) for a, b, g in hits] for sid, hits in data.items()}


def _hits(signatures: Iterable[ErrorSignature], text: str) -> dict[str, tuple[ErrorSignature, list]]:
    from fixdnn.knowledge.compat import rules_dir

    shipped = str(rules_dir()) + "/"
    sigs = list(signatures)
    users = [s for s in sigs if not s.source.startswith(shipped)]
    bounded = _bounded(users, text) if users else {}
    return {s.id: (s, bounded.get(s.id, []) if s in users else
                   [_Hit(m.span(), m.groupdict()) for m in _compiled(s).finditer(text)]) for s in sigs}


def match_text(text: str, signatures: Iterable[ErrorSignature]) -> list[Match]:
    """Every signature found in ``text``, in the order of first appearance."""
    text = clean(text)
    starts = [0] + [m.end() for m in re.finditer("\n", text)]
    hits_of = _hits(signatures, text)
    spans = [(h.start(), h.end(), sid) for sid, (_sig, hits) in hits_of.items() for h in hits]
    found = []
    for sid, (sig, hits) in hits_of.items():
        if not hits or all(_inside_longer(h, sid, spans) for h in hits):
            continue  # e.g. torch's "libcudnn.so.9: cannot open…" inside TF's "Could not load dynamic library…"
        first = hits[0]
        index = bisect.bisect_right(starts, first.start()) - 1
        end = text.find("\n", first.start())
        line_text = text[starts[index]:end if end >= 0 else len(text)].strip()
        if len(line_text) > MAX_EXCERPT:
            lo = max(0, first.start() - starts[index] - 40)
            line_text = ("…" if lo else "") + line_text[lo:lo + MAX_EXCERPT] + "…"
        groups = {k: v for k, v in first.groupdict().items() if v is not None}
        found.append(Match(sig, index + 1, line_text, len(hits), groups))
    found.sort(key=lambda m: (m.line, m.signature.id))
    return found


def _inside_longer(hit: _Hit, sid: str, spans: list[tuple[int, int, str]]) -> bool:
    """True when another signature's match covers this one and is longer: the more specific one wins."""
    return any(other != sid and start <= hit.start() and hit.end() <= end and end - start > hit.end() - hit.start()
               for start, end, other in spans)


def is_harmless(sig: ErrorSignature, facts=None) -> bool:
    """Known noise, as ``rules/errors.toml`` marks it: always, or only on a machine without a driver."""
    if sig.harmless == "always":
        return True
    if sig.harmless == "without-driver" and facts is not None:
        driver = getattr(facts, "driver", None)
        return driver is None or not driver.version
    return False


@dataclass(frozen=True)
class Explained:
    match: Match
    harmless: bool
    causes: tuple = ()  # Symptoms of the target that are among the signature's causes
    ruled_out: tuple[str, ...] = ()  # the signature's symptom names that do not hold here
    actions: tuple[str, ...] = ()  # what `fixdnn apply` would do for those causes (Action.describe lines)
    unfixed: tuple[str, ...] = ()  # causes no remedy applies to


@dataclass(frozen=True)
class Explanation:
    items: tuple[Explained, ...]
    checked: str | None = None  # the interpreter diagnosed; None when none was
    not_checked: str = ""  # why no environment was diagnosed
    other: tuple = ()  # error-level symptoms of the target no matched message points to

    @property
    def exit_code(self) -> int:
        """0: every message recognised; 1: nothing recognised in the text."""
        return 0 if self.items else 1

    def to_dict(self) -> dict[str, Any]:
        def sym(s) -> dict:
            return {"code": s.code, "name": s.name, "severity": s.severity, "summary": s.summary,
                    "evidence": s.evidence, "chain": list(s.chain), "hint": s.hint}

        return {
            "schema": "fixdnn.explain/1",
            "checked": self.checked,
            "not_checked": self.not_checked or None,
            "messages": [{
                "id": e.match.signature.id, "line": e.match.line, "excerpt": e.match.excerpt,
                "count": e.match.count, "groups": e.match.groups, "frameworks": list(e.match.signature.frameworks),
                "harmless": e.harmless, "meaning": e.match.signature.cause, "usual_fix": e.match.signature.fix,
                "causes_here": [sym(s) for s in e.causes], "ruled_out": list(e.ruled_out),
                "actions": list(e.actions), "unfixed": list(e.unfixed),
            } for e in self.items],
            "other_errors": [sym(s) for s in self.other],
        }


def explain(matches: list[Match], facts=None, symptoms: Iterable = (), *, plan=None,
            not_checked: str = "") -> Explanation:
    """Relate each match to the symptoms that hold in the target. ``plan``: a function
    ``(symptoms) -> Plan`` (see :func:`plan_for`); without it no actions are listed."""
    symptoms = tuple(symptoms)
    items = []
    claimed: set[str] = set()
    for m in matches:
        sig = m.signature
        if is_harmless(sig, facts):
            items.append(Explained(m, True))
            continue
        causes = tuple(s for s in symptoms if s.name in sig.symptoms and s.severity != "info")
        claimed.update(s.name for s in causes)
        held = {s.name for s in causes}
        ruled = tuple(n for n in sig.symptoms if n not in held) if facts is not None else ()
        actions: tuple[str, ...] = ()
        unfixed: tuple[str, ...] = ()
        if causes and plan is not None:
            try:
                p = plan(causes)
            except Exception as exc:  # noqa: BLE001 - a planning failure must not hide the explanation
                unfixed = (f"planning failed: {exc}",)
            else:
                python = facts.target.python if facts is not None else None
                actions = tuple(a.describe(python) for a in p.actions if set(a.fixes) & held)
                unfixed = tuple(n for n in p.unfixed if n in held)
        items.append(Explained(m, False, causes, ruled, actions, unfixed))
    other = tuple(s for s in symptoms if s.severity == "error" and s.name not in claimed)
    checked = facts.target.python or facts.target.prefix if facts is not None else None
    return Explanation(tuple(items), checked, not_checked, other if matches else ())


def plan_for(facts, host, rules_dirs: Iterable[str] = ()):
    """A ``plan`` callback: plan offline (no index queries) for the given symptoms."""
    def run(symptoms):
        from fixdnn.plan.build import build_plan

        return build_plan(facts, list(symptoms), {"offline": True, "rules": list(rules_dirs)}, host=host,
                          check=False)

    return run


def render_lines(ex: Explanation, *, chain_lines: int = 8) -> list[str]:
    """The explanation as plain text lines (the CLI prints them)."""
    out: list[str] = []
    if not ex.items:
        out.append("no known error message found in the text (fixdnn knows the messages listed in rules/errors.toml)")
    for e in ex.items:
        sig = e.match.signature
        times = f", {e.match.count} times" if e.match.count > 1 else ""
        out.append(f"{sig.id} (line {e.match.line}{times}): {e.match.excerpt}")
        if e.harmless:
            out.append(f"  harmless: {sig.cause}. {sig.fix}")
            out.append("")
            continue
        out.append(f"  this error means: {sig.cause}")
        if e.causes:
            for s in e.causes:
                out.append(f"  in this environment the cause is {s.code} {s.name}: {s.summary}")
                for line in list(s.chain)[:chain_lines]:
                    out.append(f"      {line}")
                if len(s.chain) > chain_lines:
                    out.append(f"      … ({len(s.chain) - chain_lines} more lines: fixdnn --json)")
            if e.actions:
                out.append("  the fix (`fixdnn apply` would do it):")
                out += [f"      {a}" for a in e.actions]
            else:
                out.append(f"  the fix: {sig.fix}")
                if e.unfixed:
                    out.append(f"      (no automatic remedy for {', '.join(e.unfixed)} here)")
        elif ex.checked is not None:
            if e.ruled_out:
                out.append(f"  in this environment none of its known causes holds ({', '.join(e.ruled_out)} "
                           f"checked in {ex.checked}): the cause is outside what fixdnn sees statically")
            else:
                out.append(f"  fixdnn cannot see this cause statically (checked {ex.checked})")
            out.append(f"  the usual fix: {sig.fix}")
        else:
            out.append(f"  the usual fix: {sig.fix}")
        out.append("")
    if ex.checked is None and ex.items and not all(e.harmless for e in ex.items):
        out.append(f"no environment checked{': ' + ex.not_checked if ex.not_checked else ''} "
                   "(activate it, or pass --python PATH, to learn which cause holds)")
    if ex.other:
        out.append("other errors in this environment:")
        out += [f"  {s.code} {s.name}: {s.summary}" for s in ex.other]
    while out and out[-1] == "":
        out.pop()
    return out


__all__ = ["Explained", "Explanation", "Match", "clean", "explain", "is_harmless", "match_text", "plan_for",
           "render_lines"]
