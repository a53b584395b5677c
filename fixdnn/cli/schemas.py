"""The JSON Schema of every ``--json`` output: the public contract, written once, here.

Each output carries ``"schema": "fixdnn.NAME/N"``. Within a version keys are only ever added (every
object allows more keys than listed), never renamed or removed; a change that breaks a reader gets a new
N. ``python -m fixdnn.cli.reference docs/reference`` publishes these as ``docs/reference/schemas/*.json``
and the page ``json.md``; a test validates real outputs of every command against them.
"""

from __future__ import annotations

from typing import Any

DIALECT = "https://json-schema.org/draft/2020-12/schema"

STR: dict = {"type": "string"}
INT: dict = {"type": "integer"}
BOOL: dict = {"type": "boolean"}
ANY_OBJ: dict = {"type": "object"}


def opt(schema: dict) -> dict:
    """``schema`` or null."""
    return {"anyOf": [schema, {"type": "null"}]}


def arr(items: dict) -> dict:
    return {"type": "array", "items": items}


def obj(props: dict[str, dict], *, optional: tuple[str, ...] = (), doc: str = "") -> dict:
    """An object with these keys (all required but ``optional``); further keys may be added later."""
    out: dict[str, Any] = {"type": "object", "properties": props,
                           "required": [k for k in props if k not in optional]}
    if doc:
        out["description"] = doc
    return out


SYMPTOM = obj({
    "code": STR, "name": STR, "severity": {"enum": ["error", "warning", "info"]}, "summary": STR,
    "evidence": ANY_OBJ, "chain": arr(STR), "hint": opt(STR),
}, doc="One symptom: a permanent code, a stable name, and its evidence (chain: the loader steps, in full).")

PLAN = obj({
    "actions": arr(obj({"kind": STR, "fixes": arr(STR), "remedy": STR, "reason": STR,
                        "reach": arr(obj({"where": STR, "reaches": STR, "note": STR})),
                        "proven": opt(BOOL), "proof": STR,
                        # by kind: pip-install / pip-uninstall
                        "command": STR, "packages": arr(STR), "available": opt(BOOL), "check": opt(STR),
                        "hashes": arr(STR),
                        # environment changes, preload, write-file, manual steps
                        "name": STR, "value": opt(STR), "describe": STR, "path": opt(STR), "diff": STR, "text": STR},
                       optional=("reach", "command", "packages", "available", "check", "hashes", "name", "value",
                                 "describe", "path", "diff", "text"))),
    "kernelspecs": arr(obj({"path": STR, "name": STR, "location": STR, "inside": BOOL})),
    "files": arr(obj({"path": STR, "diff": STR, "added": INT, "removed": INT})),
    "notes": arr(STR), "unfixed": arr(STR), "runnable": BOOL, "proven": BOOL,
    "alternatives": arr(obj({"symptom": STR, "remedy": STR, "status": STR})),
}, optional=("kernelspecs",),
    doc="A repair plan: actions in order (pip commands, environment changes, files), where each change lives "
        "and which processes it reaches, never yet applied. proven: each step was applied in the model and "
        "removes its symptom there (proof says what the model showed; null for manual steps); alternatives: "
        "every remedy considered, chosen or why not.")

_TARGET = obj({
    "python": opt(STR), "python_version": opt(STR), "prefix": opt(STR),
    "kind": {"enum": ["venv", "conda", "system", "files"]},
    "chosen_because": STR, "startup_code": arr(STR),
}, doc="The environment diagnosed, and why that one (--python, VIRTUAL_ENV, the project's .venv, ...). "
       "startup_code: what a plain python of it runs at every start (.pth import lines as file:line: text, "
       "sitecustomize / usercustomize), read as text and never run by diagnosis.")

_NEED = obj({"library": STR, "major": INT, "minimum": opt(STR), "pin": opt(STR), "source": STR, "wheel": opt(STR)})

_FRAMEWORK = obj({
    "name": STR, "distribution": STR, "version": STR, "gpu_build": BOOL, "cuda": opt(STR),
    "cudnn": opt(obj({
        "required": obj({"major": INT, "minimum": opt(STR), "pin": opt(STR), "source": STR}),
        "resolved_path": opt(STR), "resolved_version": opt(STR), "chain": arr(STR),
    })),
    "needs": arr(_NEED), "notes": arr(STR),
})

_LIBRARY = obj({
    "family": STR, "path": STR, "realpath": STR, "soname": opt(STR), "version": opt(STR),
    "version_source": opt(STR), "owner": opt(STR), "found_in": arr(STR), "error": opt(STR), "aliases": arr(STR),
})


def _envelope(name: str, title: str, props: dict[str, dict], optional: tuple[str, ...] = ()) -> dict:
    body = obj({"schema": {"const": name}, **props}, optional=optional)
    return {"$schema": DIALECT, "$id": f"urn:fixdnn:schema:{name}", "title": title, **body}


SCHEMAS: dict[str, dict] = {}


def _add(name: str, title: str, props: dict[str, dict], optional: tuple[str, ...] = ()) -> None:
    SCHEMAS[name] = _envelope(name, title, props, optional)


_add("fixdnn.report/1", "fixdnn --json: the diagnosis", {
    "target": _TARGET,
    "frameworks": arr(_FRAMEWORK),
    "libraries": arr(_LIBRARY),
    "driver": opt(obj({"version": opt(STR), "source": opt(STR)})),
    "symptoms": arr(SYMPTOM),
    "unknowns": arr(obj({"what": STR, "reason": STR})),
    "plan": PLAN,
}, optional=("plan",))

_add("fixdnn.symptoms/1", "fixdnn symptoms --json: every symptom fixdnn knows", {
    "symptoms": arr(obj({"code": STR, "name": STR, "severity": STR, "title": STR})),
})

_add("fixdnn.env/1", "fixdnn env --json: what the activation scripts, the in-process hook and kernelspecs change", {
    "prefix": STR,
    "operations": arr(obj({"op": STR, "name": STR, "value": opt(STR), "reason": opt(STR), "fixes": opt(STR),
                           "source": STR})),
    "in_process": obj({"installed": BOOL, "files": arr(STR), "preload": arr(ANY_OBJ), "ops": arr(ANY_OBJ)}),
    "kernelspecs": arr(obj({"name": STR, "path": STR, "location": STR, "argv0": opt(STR), "runs_env": BOOL,
                            "env": ANY_OBJ, "fixdnn_sets": arr(STR), "shadowed": BOOL, "error": opt(STR)})),
})

_TXN_ROW = obj({"id": STR, "time": STR, "actions": arr(STR), "outcome": STR, "reason": opt(STR)})

_add("fixdnn.history/1", "fixdnn history --json: the environment's transactions, oldest first", {
    "prefix": STR, "transactions": arr(_TXN_ROW),
})

_add("fixdnn.apply/1", "fixdnn apply --json: the plan and what became of it", {
    "target": obj({"python": opt(STR), "prefix": STR}),
    "plan": PLAN,
    "outcome": {"enum": ["applied", "failed-and-rolled-back", "nothing-to-do", "failed", "refused-unproven"]},
    "txn_id": opt(STR),
    "reason": STR,
    "steps_done": INT,
    "manual": arr(STR),
    "symptoms": arr(SYMPTOM),
})

_add("fixdnn.rollback/1", "fixdnn rollback --json: the transaction undone", {
    "prefix": STR, "txn_id": STR, "steps_undone": INT,
})

_add("fixdnn.lock/1", "fixdnn lock --json: the lockfile written", {
    "output": STR, "platform": STR, "conda_packages": INT, "pip_packages": INT, "notes": arr(STR),
})

_add("fixdnn.verify/1", "fixdnn verify --json: what the subprocess probes saw", {
    "python": opt(STR), "ok": BOOL, "passed": arr(STR),
    "findings": arr(obj({"name": STR, "severity": {"enum": ["error", "warning", "info"]}, "summary": STR,
                         "probe": STR, "evidence": ANY_OBJ, "output": STR})),
    "loader_traces": {"type": "object", "additionalProperties": STR},
})

_add("fixdnn.explain/1", "fixdnn explain --json: what an error message means here", {
    "checked": opt(STR), "not_checked": opt(STR),
    "messages": arr(obj({
        "id": STR, "line": INT, "excerpt": STR, "count": INT, "groups": ANY_OBJ, "frameworks": arr(STR),
        "harmless": BOOL, "meaning": STR, "usual_fix": STR, "causes_here": arr(SYMPTOM),
        "ruled_out": arr(STR), "actions": arr(STR), "unfixed": arr(STR),
    })),
    "other_errors": arr(SYMPTOM),
})


def from_dataclass(cls: type) -> dict:
    """A JSON Schema for the serialised form of a dataclass (``fixdnn.base.serial.to_json``), read from
    its type hints; every dataclass met becomes one entry of ``$defs``."""
    import dataclasses
    import types
    import typing

    defs: dict[str, dict] = {}

    def node(tp: Any) -> dict:
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            return {"anyOf": [node(a) for a in typing.get_args(tp)]}
        if tp is type(None):
            return {"type": "null"}
        if origin in (tuple, list) or tp in (tuple, list):
            args = typing.get_args(tp)
            if len(args) == 2 and args[1] is Ellipsis or len(args) == 1:
                return arr(node(args[0]))
            return {"type": "array", "prefixItems": [node(a) for a in args]} if args else {"type": "array"}
        if origin is dict or tp is dict:
            args = typing.get_args(tp)
            return {"type": "object", "additionalProperties": node(args[1])} if args else ANY_OBJ
        if tp is Any:
            return {}
        if dataclasses.is_dataclass(tp):
            if tp.__name__ not in defs:
                defs[tp.__name__] = {}  # reserve: a recursive reference finds it
                hints = typing.get_type_hints(tp)
                fields = dataclasses.fields(tp)
                defs[tp.__name__] = obj({f.name: node(hints[f.name]) for f in fields},
                                        optional=tuple(f.name for f in fields
                                                       if f.default is not dataclasses.MISSING
                                                       or f.default_factory is not dataclasses.MISSING))
            return {"$ref": f"#/$defs/{tp.__name__}"}
        simple = {str: STR, int: INT, bool: BOOL, float: {"type": "number"}}
        if tp in simple:
            return simple[tp]
        raise TypeError(f"no JSON Schema for {tp!r}")

    root = node(cls)
    return {**defs.pop(cls.__name__), "$defs": defs} if root.get("$ref") else root


def _facts_schema() -> dict:
    from fixdnn.model.facts import FACTS_SCHEMA, Facts

    body = from_dataclass(Facts)
    body["properties"]["schema"] = {"const": FACTS_SCHEMA}
    return {"$schema": DIALECT, "$id": f"urn:fixdnn:schema:{FACTS_SCHEMA}",
            "title": "fixdnn facts: everything gathered, the input of every check (generated from fixdnn's "
                     "fact dataclasses; diagnose it again with --facts FILE)", **body}


SCHEMAS["fixdnn.facts/1"] = _facts_schema()


def file_name(name: str) -> str:
    """``fixdnn.report/1`` -> ``fixdnn.report-1.json``."""
    return name.replace("/", "-") + ".json"
