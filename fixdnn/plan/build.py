"""symptoms + context + remedy rules -> Plan. Pure: no I/O, nothing printed, nothing run.

For each symptom (errors first), the remedies for its name are tried in order of preference; the first
whose ``when`` holds and whose templates render to valid actions is chosen, and its reason says which
other remedies it was preferred over and why the earlier ones did not apply. A symptom no remedy fixes
goes to ``Plan.unfixed``. The actions are then de-duplicated, conflicts resolved (the framework's own
pin wins) and ordered: uninstall, install, path and variable changes, files, manual steps last.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import asdict, replace
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement

from fixdnn.knowledge.rules import Remedy, Rules
from fixdnn.model.actions import Action, Plan
from fixdnn.plan.context import Context

_ORDER = {"pip-uninstall": 0, "pip-install": 1, "path-remove": 2, "path-prepend": 3, "env-unset": 4,
          "env-set": 5, "preload": 6, "write-file": 7, "manual": 8}
_SEVERITY = {"error": 0, "warning": 1, "info": 2}
ONLY_BINARY = "--only-binary=:all:"


# What a rule may add to `pip install`: nothing that builds from source (--no-binary), trusts another
# index or host, or installs outside the target. Exact pins and binary wheels are promises of the plan.
PIP_ARGS = frozenset({"--only-binary=:all:", "--force-reinstall", "--no-deps", "--upgrade", "--ignore-installed",
                      "--no-cache-dir", "--upgrade-strategy=only-if-needed"})


class RenderError(ValueError):
    """A template could not be filled for this symptom (a missing value, a non-exact pin ...)."""


_MISSING = object()


def _lookup(path: str, scope: dict) -> Any:
    value: Any = scope
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part, _MISSING)
        elif isinstance(value, (list, tuple)) and part.isdigit():
            value = value[int(part)] if int(part) < len(value) else _MISSING
        else:
            return _MISSING
        if value is _MISSING or value is None:
            return _MISSING
    return value


def _filter(name: str, value: Any, ctx: Context, path: str) -> Any:
    text = str(value)
    if name == "dirname":
        return posixpath.dirname(text.rstrip("/")) or _MISSING
    if name == "basename":
        return posixpath.basename(text.rstrip("/")) or _MISSING
    if name == "name":
        return text.split("==", 1)[0].split("[", 1)[0]
    if name == "version":
        return text.split("==", 1)[1] if "==" in text else _MISSING
    if name == "major":
        m = re.match(r"(\d+)", text.split("==", 1)[-1])
        return m.group(1) if m else _MISSING
    if name == "pin":  # a distribution name -> its exact pin declared by a framework
        version = ctx.pins.get(text.split("==", 1)[0])
        return f"{text.split('==', 1)[0]}=={version}" if version else _MISSING
    if name == "installed":  # a distribution name -> name==its installed version
        version = ctx.installed.get(text.split("==", 1)[0])
        return f"{text.split('==', 1)[0]}=={version}" if version else _MISSING
    raise RenderError(f"unknown filter {name}")  # pragma: no cover - rejected at load


def scope_for(evidence: dict, ctx: Context, extra: dict | None = None) -> dict:
    fw_name = evidence.get("framework") if isinstance(evidence.get("framework"), str) else None
    fw = ctx.frameworks.get(fw_name) if fw_name else None
    scope = dict(evidence)
    scope["ctx"] = ctx.namespace()
    scope["fw"] = asdict(fw) if fw else {}
    scope.update(extra or {})
    return scope


def resolve(path: str, filters: tuple[str, ...], scope: dict, ctx: Context) -> Any:
    value = _lookup(path, scope)
    for f in filters:
        if value is _MISSING:
            break
        value = _filter(f, value, ctx, path)
    return value


def render(template: str, scope: dict, ctx: Context) -> str:
    def sub(m: re.Match) -> str:
        parts = [p.strip() for p in m.group(1).split("|")]
        value = resolve(parts[0], tuple(parts[1:]), scope, ctx)
        if value is _MISSING or value == "" or isinstance(value, (dict, list)):
            raise RenderError(f"no value for {{{m.group(1)}}}")
        return str(value)

    protected = template.replace("{{", "\0L").replace("}}", "\0R")
    return re.sub(r"\{([^{}]*)\}", sub, protected).replace("\0L", "{").replace("\0R", "}")


def exact_pin(text: str) -> str:
    """The requirement if it is one exact ``name==version`` pin (extras allowed), else RenderError."""
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise RenderError(f"{text!r} is not a requirement ({exc})") from None
    specs = list(req.specifier)
    if req.url or req.marker or len(specs) != 1 or specs[0].operator != "==" or "*" in specs[0].version:
        raise RenderError(f"refused {text!r}: pip-install takes exact pins only ('name==version')")
    return text


def holds(remedy: Remedy, scope: dict, ctx: Context) -> str | None:
    """None when every condition holds, else the first that does not, in words."""
    for key, want in remedy.when.items():
        if key == "env_kind" and ctx.env_kind not in want:
            return f"the environment is {ctx.env_kind}, not {'/'.join(want)}"
        if key == "installer" and ctx.installer not in want:
            return f"installer is {ctx.installer}, needs {'/'.join(want)}"
        if key == "can_fetch" and ctx.can_fetch != want:
            return "no installer can fetch wheels (offline, or no pip)" if want else "wheels can be fetched"
        if key == "offline" and ctx.offline != want:
            return "online" if want else "--offline"
        if key == "persistable" and ctx.persistable != want:
            return f"a {ctx.env_kind} environment has no activation scripts to persist variables" if want \
                else "variables can be persisted"
        if key == "framework" and scope.get("framework") not in want:
            return f"framework is {scope.get('framework')}, not {'/'.join(want)}"
        if key == "has":
            for path in want:
                parts = [p.strip() for p in path.split("|")]
                value = resolve(parts[0], tuple(parts[1:]), scope, ctx)
                if value is _MISSING or value in ("", [], {}):
                    return f"no {path}"
        if key == "missing":
            for path in want:
                parts = [p.strip() for p in path.split("|")]
                value = resolve(parts[0], tuple(parts[1:]), scope, ctx)
                if value is not _MISSING and value not in ("", [], {}):
                    return f"{path} is present"
        if key == "contains":
            for path, text in want.items():
                got = resolve(path, (), scope, ctx)
                items = got if isinstance(got, (list, tuple)) else [got]
                if got is _MISSING or not any(isinstance(i, str) and str(text) in i for i in items):
                    return f"{path} does not mention {text!r}"
        if key == "equals":
            for path, value in want.items():
                got = resolve(path, (), scope, ctx)
                if got is _MISSING or got != value:
                    return f"{path} is not {value!r}"
    return None


def build_actions(remedy: Remedy, scope: dict, ctx: Context, fixes: str) -> list[Action]:
    reason = render(remedy.reason, scope, ctx)
    out = []
    for tmpl in remedy.actions:
        kind = tmpl["kind"]
        kw: dict[str, Any] = {"kind": kind, "fixes": (fixes,), "reason": reason, "remedy": remedy.id}
        if "packages" in tmpl:
            packages = tuple(render(p, scope, ctx) for p in tmpl["packages"])
            if kind == "pip-install":
                packages = tuple(exact_pin(p) for p in packages)
                args = [render(a, scope, ctx) for a in tmpl.get("pip_args", ())]
                bad = [a for a in args if a not in PIP_ARGS]
                if bad:
                    raise RenderError(f"pip_args {bad[0]!r} is not allowed (fixdnn installs exact pins from "
                                      f"binary wheels only; allowed: {', '.join(sorted(PIP_ARGS))})")
                if ONLY_BINARY not in args:
                    args.insert(0, ONLY_BINARY)
                kw["pip_args"] = tuple(args) + ctx.pip_args()
                kw["hashes"] = tuple(f"{p} sha256:{ctx.hashes[p]}" for p in packages if p in ctx.hashes)
            else:
                packages = tuple(Requirement(p).name if _is_req(p) else p for p in packages)
            kw["packages"] = packages
            kw["installer"] = ctx.installer_argv  # the exact installer apply will run
        for key in ("name", "value", "path", "content", "text"):
            if key in tmpl:
                kw[key] = render(tmpl[key], scope, ctx)
        if kind in ("path-prepend", "path-remove"):
            value = kw["value"]
            if not value or not value.startswith("/") or ":" in value:
                raise RenderError(f"{kind} needs one absolute directory, got {value!r}")
        if kind in ("env-set", "env-unset", "path-prepend", "path-remove"):
            _safe_env_op(kind, kw)
        if kind == "preload" and (not kw["path"].startswith("/") or "\n" in kw["path"]):
            raise RenderError(f"preload needs one absolute library file, got {kw['path']!r}")
        if kind in ("env-set", "env-unset", "path-prepend", "path-remove") and \
                not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", kw["name"]):
            raise RenderError(f"{kw['name']!r} is not a variable name")
        out.append(Action(**kw))
    return out


def _safe_env_op(kind: str, kw: dict) -> None:
    """The same promises env.toml keeps (no LD_PRELOAD, no empty or relative search-path entry),
    checked when the plan is made, so a rule cannot plan what apply would refuse."""
    from fixdnn.shell.envfile import EnvFileError, EnvOp

    op = {"env-set": "set", "env-unset": "unset"}.get(kind, kind)
    try:
        EnvOp(op, kw.get("name") or "", kw.get("value") if op != "unset" else None)
    except EnvFileError as exc:
        raise RenderError(str(exc)) from None


def _is_req(text: str) -> bool:
    try:
        Requirement(text)
        return True
    except InvalidRequirement:
        return False


def alternatives(symptom, compat) -> dict:
    """The ``alt.*`` namespace: versions from the compat tables that agree (framework-pins-conflict)."""
    if compat is None or symptom.name != "framework-pins-conflict":
        return {}
    fws = symptom.evidence.get("frameworks") or []
    majors = {f.get("name"): (f.get("cudnn") or {}).get("major") for f in fws}
    lines = []
    for name, major in majors.items():
        others = [m for n, m in majors.items() if n != name]
        if not others:
            continue
        other = others[0]
        if name == "tensorflow":
            ok = [f"tensorflow {b.version}" for b in compat.tf_builds if b.cudnn.major == other]
        elif name == "torch":
            ok = [f"torch {w.version} ({w.cudnn_pin})" for w in compat.torch_wheels
                  if int(w.cudnn_pin.split("==")[1].split(".")[0]) == other]
        else:
            ok = []
        if ok:
            lines.append(f"{name} releases built for cuDNN {other}: {', '.join(ok[:4])}")
    return {"alt": {"versions": "; ".join(lines) or "none in the compat tables"}}


class PlanInputError(ValueError):
    """--use / --skip name no remedy: one line for the user."""


def _candidates(symptom, rules: Rules, use: tuple[str, ...], skip: tuple[str, ...]):
    """Remedies in the rule file's order; one named by --use goes first; --skip ones are set aside."""
    found = list(rules.for_symptom(symptom.name))
    chosen = [r for r in found if r.id in use]
    ordered = chosen + [r for r in found if r.id not in use]
    return [(r, "skipped (--skip)" if r.id in skip else None) for r in ordered]


def _pins(actions: list[Action]) -> list[str]:
    return [p for a in actions if a.kind == "pip-install" for p in a.packages]


def _constrained(actions: list[Action], ctx: Context) -> str | None:
    """Why a pin of these actions is ruled out by the user's pip constraints, or None."""
    for pin in _pins(actions):
        why = ctx.forbidden(pin)
        if why:
            return f"{pin} is forbidden by the pip constraint {why}"
    return None


def _check_pins(actions: list[Action], ctx: Context, availability) -> tuple[list[Action], str | None]:
    """Actions with availability set, or the reason the remedy cannot run (an unavailable pin)."""
    pins = _pins(actions)
    if not pins or availability is None:
        return actions, None
    got = availability(pins)
    out = []
    for a in actions:
        if a.kind != "pip-install":
            out.append(a)
            continue
        rows = [got.get(p, (None, "not checked", None)) for p in a.packages]
        bad = [f"{p}: {r[1]}" for p, r in zip(a.packages, rows) if r[0] is False]
        if bad:
            return actions, "unavailable: " + "; ".join(bad)
        available = None if any(r[0] is None for r in rows) else True
        hashes = tuple(f"{p} sha256:{r[2]}" for p, r in zip(a.packages, rows) if r[2])
        out.append(replace(a, available=available, check="; ".join(dict.fromkeys(r[1] for r in rows)),
                           hashes=hashes or a.hashes))
    return out, None


def plan(symptoms, ctx: Context, rules: Rules, compat=None, *, facts=None, availability=None,
         use: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> Plan:
    """Choose a remedy per symptom and combine the actions into one ordered, conflict-free plan.

    With ``facts`` every candidate is proven in the model (:mod:`fixdnn.plan.model`): the first, in the
    rule file's order, whose effects remove its symptom without a new error is chosen; the steps chosen
    for earlier symptoms are already applied there, so a symptom they remove gets no step of its own.
    ``availability(pins) -> {pin: (available, how, sha256)}`` rejects a remedy whose pin cannot be had."""
    from fixdnn.plan.model import label, prove, symptom_key
    from fixdnn.symptoms.registry import diagnose

    actions: list[Action] = []
    notes: list[str] = []
    unfixed: list[str] = []
    alts: list[tuple[str, str, str]] = []
    deferred: list = []  # (symptom, fallback, rejected, candidate ids): decided once every symptom is planned
    current_facts, current = facts, tuple(symptoms)
    ordered = sorted(enumerate(symptoms), key=lambda p: (_SEVERITY.get(p[1].severity, 3), p[0]))
    for _, symptom in ordered:
        if symptom.severity == "info":
            notes.append(f"{symptom.name}: informational, nothing to change ({symptom.hint or symptom.summary})")
            continue
        if facts is not None:
            now = next((s for s in current if symptom_key(s) == symptom_key(symptom)), None)
            if now is None:
                notes.append(f"{label(symptom)}: removed in the model by the steps above")
                continue
            symptom = now
        candidates = _candidates(symptom, rules, use, skip)
        scope = scope_for(symptom.evidence, ctx, alternatives(symptom, compat))
        rejected: list[str] = []
        chosen: list[Action] | None = None
        chosen_id = ""
        fallback: tuple[str, list[Action], int] | None = None  # an unproven remedy, if nothing is proven
        for remedy, why_not in candidates:
            why_not = why_not or holds(remedy, scope, ctx)
            built: list[Action] = []
            if why_not is None:
                try:
                    built = build_actions(remedy, scope, ctx, symptom.name)
                except RenderError as exc:
                    why_not = str(exc)
                    notes.append(f"{symptom.name}: remedy {remedy.id} not used: {exc}")
            if why_not is None:
                why_not = _constrained(built, ctx)
            proven = None
            if why_not is None and facts is not None:  # the model first: it is cheap, pip is not
                proof, after_facts, after = prove(current_facts, current, built, [symptom], compat, diagnose)
                built = [replace(a, proven=proof.proven if a.kind != "manual" else None, proof=proof.reason)
                         for a in built]
                proven = proof.proven
                if not proven and remedy.id not in use:
                    why_not = proof.reason
            if why_not is None:
                built, why_not = _check_pins(built, ctx, availability)
            if why_not is None:  # proven, not modelled (no facts), or the user's --use choice (unproven)
                if proven:
                    current_facts, current = after_facts, after
                chosen, chosen_id = built, remedy.id
                break
            if proven is False and not why_not.startswith(("unavailable", "pip would change nothing")):
                # nothing proven yet: a manual step is the safer fallback than an unproven change
                rank = 0 if all(a.kind == "manual" for a in built) else 1
                if fallback is None or rank < fallback[2]:
                    fallback = (remedy.id, built, rank)
            rejected.append(f"{remedy.id} ({why_not})")
            alts.append((symptom.name, remedy.id, why_not))
        if chosen is None and fallback is not None and facts is not None:
            # nothing proven: a step chosen for a later symptom may still remove this one in the model
            deferred.append((symptom, fallback, rejected, [r.id for r, _ in candidates]))
            continue
        if chosen is None:
            if symptom.name not in unfixed:
                unfixed.append(symptom.name)
            if facts is not None and rejected:
                notes.append(f"{label(symptom)}: no remedy proven in the model: " + "; ".join(rejected))
            continue
        _choose(symptom, chosen_id, chosen, rejected, [r.id for r, _ in candidates], actions, alts)
    for symptom, (chosen_id, chosen, _rank), rejected, ids in deferred:
        if symptom_key(symptom) not in {symptom_key(s) for s in current}:
            notes.append(f"{label(symptom)}: removed in the model by the steps above")
            actions[:] = [replace(a, fixes=tuple(dict.fromkeys(a.fixes + (symptom.name,))))
                          if a.proven and label(symptom) in a.proof else a for a in actions]
            continue
        alts[:] = [x for x in alts if not (x[0] == symptom.name and x[1] == chosen_id)]
        rejected = [r for r in rejected if not r.startswith(chosen_id + " (")]
        if any(a.kind != "manual" for a in chosen):
            notes.append(f"{label(symptom)}: no remedy is proven in the model; {chosen_id} is shown unproven "
                         f"({chosen[0].proof})")
        _choose(symptom, chosen_id, chosen, rejected, ids, actions, alts)
    actions, more = _resolve(actions, ctx)
    notes.extend(more)
    actions = _dedupe(actions)
    actions.sort(key=lambda a: _ORDER[a.kind])
    notes.extend(_outside_notes(actions, ctx))
    return Plan(tuple(actions), tuple(dict.fromkeys(notes)), tuple(unfixed), tuple(alts))


def _choose(symptom, chosen_id: str, chosen: list[Action], rejected: list[str], ids: list[str],
            actions: list[Action], alts: list) -> None:
    later = ids[ids.index(chosen_id) + 1:]
    alts.append((symptom.name, chosen_id, "chosen" + (f" ({chosen[0].proof})" if chosen[0].proof else "")))
    alts.extend((symptom.name, rid, "not tried: an earlier remedy was chosen") for rid in later)
    suffix = ""
    if rejected:
        suffix += "; not " + ", ".join(rejected)
    if later:
        suffix += "; preferred over " + ", ".join(later)
    actions.extend(replace(a, reason=a.reason + suffix) for a in chosen)


def _outside_notes(actions: list[Action], ctx: Context) -> list[str]:
    """fixdnn touches only the environment (and its own state folder) unless the plan says otherwise."""
    inside = os.path.normpath(ctx.prefix or "/") if ctx.prefix else None
    out = []
    for a in actions:
        if a.kind == "write-file" and a.path:
            path = os.path.normpath(a.path)
            if inside is None or not (path == inside or path.startswith(inside.rstrip("/") + "/")):
                out.append(f"outside the environment: {a.remedy or 'a rule'} writes {a.path}")
    return out


def _dedupe(actions: list[Action]) -> list[Action]:
    out: list[Action] = []
    index: dict[tuple, int] = {}
    for a in actions:
        k = a.key()
        if k in index:
            first = out[index[k]]
            out[index[k]] = replace(first, fixes=tuple(dict.fromkeys(first.fixes + a.fixes)))
        else:
            index[k] = len(out)
            out.append(a)
    return out


def _resolve(actions: list[Action], ctx: Context) -> tuple[list[Action], list[str]]:
    """Two installs of one package at different versions: the framework's pin wins, the other is noted.
    Contradicting variable changes: the first (from the more severe symptom) wins."""
    notes: list[str] = []
    wanted: dict[str, str] = {}
    for a in actions:
        if a.kind != "pip-install":
            continue
        for p in a.packages:
            name, version = Requirement(p).name.lower(), p.split("==", 1)[1]
            prev = wanted.get(name)
            if prev is None or (prev != version and ctx.pins.get(name) == version):
                wanted[name] = version
    out: list[Action] = []
    for a in actions:
        if a.kind == "pip-install":
            keep = []
            for p in a.packages:
                name, version = Requirement(p).name.lower(), p.split("==", 1)[1]
                if wanted[name] == version:
                    keep.append(p)
                else:
                    notes.append(f"conflict: {p} (for {', '.join(a.fixes)}) dropped in favour of "
                                 f"{name}=={wanted[name]}" + (" (the framework's own pin)" if ctx.pins.get(name) == wanted[name] else ""))
            if not keep:
                continue
            a = replace(a, packages=tuple(keep))
        out.append(a)
    final: list[Action] = []
    var_claims: dict[tuple[str, str | None], Action] = {}
    sets: dict[str, Action] = {}
    for a in out:
        if a.kind in ("path-prepend", "path-remove"):
            other = var_claims.get((a.name or "", a.value))
            if other is not None and other.kind != a.kind:
                notes.append(f"conflict: {a.describe()} (for {', '.join(a.fixes)}) dropped; it contradicts "
                             f"{other.describe()}")
                continue
            var_claims[(a.name or "", a.value)] = a
        if a.kind in ("env-set", "env-unset"):
            other = sets.get(a.name or "")
            if other is not None and (other.kind, other.value) != (a.kind, a.value):
                notes.append(f"conflict: {a.describe()} (for {', '.join(a.fixes)}) dropped; it contradicts "
                             f"{other.describe()}")
                continue
            sets[a.name or ""] = a
        final.append(a)
    return final, notes


__all__ = ["ONLY_BINARY", "PlanInputError", "RenderError", "build_plan", "exact_pin", "plan", "render", "scope_for"]


def build_plan(facts, symptoms, opts: dict | None = None, *, host=None, check: bool = True) -> Plan:
    """The CLI's entry point (not pure): load the rules (``opts["rules"]``: extra dirs), build the context
    from the facts and the target's pip (``opts["offline"]``), then plan, proving every candidate in the
    model and asking the target's installer whether each candidate's pins can be had (``check``).
    ``opts["use"]`` / ``opts["skip"]``: remedy ids to prefer / leave out (PlanInputError when unknown)."""
    from fixdnn.knowledge import compat as compat_mod
    from fixdnn.plan import context as context_mod
    from fixdnn.symptoms.registry import load_rules
    from fixdnn.target.host import Host

    opts = opts or {}
    rules = load_rules(list(opts.get("rules") or ()), errors=False)
    use, skip = tuple(opts.get("use") or ()), tuple(opts.get("skip") or ())
    known = {r.id for r in rules.remedies}
    for flag, ids in (("--use", use), ("--skip", skip)):
        for rid in ids:
            if rid not in known:
                near = sorted(k for k in known if k.split(".")[0] == rid.split(".")[0]) or sorted(known)[:3]
                raise PlanInputError(f"{flag} {rid}: no such remedy (e.g. {', '.join(near[:4])}); "
                                     "'fixdnn --dry-run' lists the alternatives")
    host = host or Host()
    compat = compat_mod.load()
    ctx = context_mod.build(facts, host, offline=bool(opts.get("offline")), compat=compat)
    availability = None
    if check:
        from fixdnn.plan.availability import Availability

        availability = Availability(host, ctx)
    return plan(symptoms, ctx, rules, compat, facts=facts, availability=availability, use=use, skip=skip)
