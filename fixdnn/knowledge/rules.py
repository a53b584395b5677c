"""Remedy and error-signature rules (``rules/remedies/*.toml``, ``rules/errors.toml``): load and validate.

Rules are data: a closed set of conditions (``when``) and action templates whose ``{placeholders}`` are
filled from the symptom's evidence and from the context. Nothing is evaluated. Every file is checked at
load; the first problem is a :class:`RulesError` of one line: ``file:line: what was expected``.

Remedy file shape::

    [[remedy]]
    id = "cudnn-missing.framework-pin"      # unique; a user rule with the same id replaces this one
    symptom = "cudnn-missing"
    priority = 10                           # optional: lower is preferred (default: file order)
    reason = "install the exact cuDNN wheel {framework} declares"
    when = { can_fetch = true, has = ["fw.cudnn_pin"] }
    actions = [ { kind = "pip-install", packages = ["{fw.cudnn_pin}"] } ]

    [[remedy.case]]                         # at least one: the test suite runs every case
    evidence = { framework = "torch" }
    context = { frameworks = { torch = { cudnn_pin = "nvidia-cudnn-cu13==9.24.0.43" } } }
    expect = [ { kind = "pip-install", packages = ["nvidia-cudnn-cu13==9.24.0.43"] } ]

Placeholders are dotted paths (``{loaded.path}``, ``{usable_copies.0.path}``) into the evidence, or into
the context namespaces ``ctx.*``, ``fw.*`` (the framework named by ``evidence.framework``) and ``alt.*``
(agreeing versions from the compat tables), followed by optional filters from a closed set:
``{loaded.path|dirname}``, ``{wheel|pin}`` (the framework's exact pin of that wheel), ``{wheel|installed}``.

Overrides: ``$XDG_CONFIG_HOME/fixdnn/rules/`` (``~/.config`` when unset, empty or relative), then ``--rules DIR``;
both mirror ``rules/`` (``remedies/*.toml``, ``errors.toml``) and replace shipped rules by id.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fixdnn.base.filecache import identity
from fixdnn.knowledge.compat import RulesError, load_toml, rules_dir
from fixdnn.model.actions import KINDS

# The closed set of conditions a remedy's ``when`` may use, with the type each takes.
CONDITIONS: dict[str, type | tuple[type, ...]] = {
    "env_kind": list,  # any of: venv conda system uv files
    "installer": list,  # any of: pip uv (the installer that works in the target), or "none"
    "can_fetch": bool,  # pip can get wheels: online, or offline with local find-links
    "offline": bool,
    "persistable": bool,  # env actions can be persisted through activation scripts (venv / conda)
    "framework": list,  # evidence.framework is one of these
    "has": list,  # every listed placeholder path resolves to a non-empty value
    "missing": list,  # every listed placeholder path is absent or empty
    "equals": dict,  # placeholder path -> exact value (string / int / bool)
    "contains": dict,  # placeholder path -> text: the string contains it, or one list item does
}
ENV_KINDS = ("venv", "conda", "system", "uv", "files")
INSTALLERS = ("pip", "uv", "none")
FILTERS = ("dirname", "basename", "pin", "installed", "name", "version", "major")

# Per action kind: allowed keys (kind is implicit), required keys, and which are lists of templates.
ACTION_KEYS: dict[str, tuple[set[str], set[str]]] = {
    "pip-install": ({"packages", "pip_args"}, {"packages"}),
    "pip-uninstall": ({"packages"}, {"packages"}),
    "env-set": ({"name", "value"}, {"name", "value"}),
    "env-unset": ({"name"}, {"name"}),
    "path-prepend": ({"name", "value"}, {"name", "value"}),
    "path-remove": ({"name", "value"}, {"name", "value"}),
    "preload": ({"path"}, {"path"}),
    "write-file": ({"path", "content"}, {"path", "content"}),
    "manual": ({"text"}, {"text"}),
}
LIST_KEYS = {"packages", "pip_args"}

# Folklore that turns one error into another: never planned.
DENY_ENV_SET = {
    "KMP_DUPLICATE_LIB_OK": "it lets two OpenMP runtimes run in one process (Intel: 'may silently produce incorrect results')",
    "PYTORCH_SKIP_CUDNN_COMPATIBILITY_CHECK": "it hides a cuDNN version mismatch instead of fixing it",
    "JAX_SKIP_CUDA_CONSTRAINTS_CHECK": "it hides a CUDA/cuDNN version mismatch instead of fixing it",
}
_DENY_TEXT = [
    (re.compile(r"\bln\s+(-\w+\s+)*\S*libcuda\S*\s+\S*libcudnn", re.I),
     "symlinking libcuda to a cuDNN name turns the error into a crash"),
    (re.compile(r"\b(" + "|".join(DENY_ENV_SET) + r")\s*=\s*\S", re.I),
     "setting a safety-check bypass is not a fix"),
]
_DENY_PATH = re.compile(r"(^|/)libcudnn[^/]*$|(^|/)libcuda\.so[^/]*$")

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")
NAMESPACES = ("ctx", "fw", "alt")


@dataclass(frozen=True)
class Case:
    evidence: dict[str, Any]
    context: dict[str, Any]
    expect: tuple[dict[str, Any], ...]  # expected actions (subset of keys compared); () = remedy does not apply
    line: int = 0


@dataclass(frozen=True)
class Remedy:
    id: str
    symptom: str
    reason: str
    when: dict[str, Any]
    actions: tuple[dict[str, Any], ...]
    cases: tuple[Case, ...]
    priority: int = 0
    source: str = ""  # file:line


@dataclass(frozen=True)
class ErrorSignature:
    id: str
    frameworks: tuple[str, ...]
    regex: str
    symptoms: tuple[str, ...]
    examples: tuple[str, ...]
    cause: str = ""
    fix: str = ""
    source: str = ""
    harmless: str = ""  # "always" (log noise), "without-driver" (expected on CPU-only machines), "" (a real error)

    def matches(self, text: str) -> re.Match | None:
        return re.search(self.regex, text, re.S)


@dataclass(frozen=True)
class Rules:
    remedies: tuple[Remedy, ...] = ()
    errors: tuple[ErrorSignature, ...] = ()
    sources: tuple[str, ...] = field(default=())

    def for_symptom(self, name: str) -> tuple[Remedy, ...]:
        return tuple(sorted((r for r in self.remedies if r.symptom == name), key=lambda r: r.priority))


# -- locating lines ----------------------------------------------------------------------------------
class _Lines:
    """Best-effort line numbers inside one TOML text: the n-th ``[[table]]`` and keys inside it."""

    def __init__(self, text: str):
        self.text = text
        self.starts = [m.start() for m in re.finditer(r"^[ \t]*\[\[(remedy|error)\]\][ \t]*$", text, re.M)]

    def line_at(self, pos: int) -> int:
        return self.text.count("\n", 0, pos) + 1

    def entry(self, index: int) -> int:
        return self.line_at(self.starts[index]) if index < len(self.starts) else 1

    def key(self, index: int, key: str, after_text: str | None = None) -> int:
        lo = self.starts[index] if index < len(self.starts) else 0
        hi = self.starts[index + 1] if index + 1 < len(self.starts) else len(self.text)
        chunk = self.text[lo:hi]
        if after_text is not None:
            at = chunk.find(after_text)
            if at >= 0:
                return self.line_at(lo + at)
        m = re.search(rf"(^|[{{,\s]){re.escape(key)}\s*=|^\s*\[\[?remedy\.{re.escape(key)}\]", chunk, re.M)
        return self.line_at(lo + m.start() + len(m.group(1) or "")) if m else self.entry(index)


# -- placeholders ------------------------------------------------------------------------------------
def placeholders(template: str) -> list[tuple[str, tuple[str, ...]]]:
    """``[(path, filters), ...]`` of a template; ``{{`` / ``}}`` are literal braces."""
    out = []
    for m in _PLACEHOLDER.finditer(template.replace("{{", "").replace("}}", "")):
        parts = [p.strip() for p in m.group(1).split("|")]
        out.append((parts[0], tuple(parts[1:])))
    return out


def _check_template(where: str, template: Any, roots: set[str] | None) -> None:
    if not isinstance(template, str):
        raise RulesError(f"{where}: expected a string, got {type(template).__name__}")
    stripped = template.replace("{{", "").replace("}}", "")
    if stripped.count("{") != stripped.count("}") or len(_PLACEHOLDER.findall(stripped)) != stripped.count("{"):
        raise RulesError(f"{where}: unbalanced braces in {template!r} (write {{{{ and }}}} for literal braces)")
    for path, filters in placeholders(template):
        if not _PATH.match(path):
            raise RulesError(f"{where}: placeholder {{{path}}} is not a dotted name")
        for f in filters:
            if f not in FILTERS:
                raise RulesError(f"{where}: unknown filter |{f} (expected one of {', '.join(FILTERS)})")
        root = path.split(".")[0]
        if roots is not None and root not in NAMESPACES and root not in roots:
            raise RulesError(f"{where}: placeholder {{{path}}} names no evidence key of this symptom "
                             f"(its cases have: {', '.join(sorted(roots)) or 'none'}; or use ctx.* / fw.*)")


def _deny(where: str, action: dict) -> None:
    kind = action.get("kind")
    if kind == "env-set" and str(action.get("name", "")).upper() in DENY_ENV_SET:
        name = str(action["name"]).upper()
        raise RulesError(f"{where}: refused folklore fix: setting {name} ({DENY_ENV_SET[name]})")
    if kind == "write-file" and _DENY_PATH.search(str(action.get("path", ""))):
        raise RulesError(f"{where}: refused folklore fix: writing a file named like libcuda/libcudnn "
                         "(a fake or symlinked library turns the error into a crash)")
    for value in action.values():
        for text in (value if isinstance(value, list) else [value]):
            for pattern, why in _DENY_TEXT:
                if isinstance(text, str) and pattern.search(text):
                    raise RulesError(f"{where}: refused folklore fix: {why}")


_NON_EXACT = re.compile(r"(>=|<=|~=|!=|===|(?<![=!<>~])[<>]|\*|@|;|,)")


def check_action(where: str, action: Any, roots: set[str] | None) -> dict:
    if not isinstance(action, dict):
        raise RulesError(f"{where}: an action must be a table like {{ kind = \"pip-install\", ... }}")
    kind = action.get("kind")
    if kind not in KINDS:
        raise RulesError(f"{where}: unknown action kind {kind!r} (expected one of {', '.join(KINDS)})")
    allowed, required = ACTION_KEYS[kind]
    extra = set(action) - allowed - {"kind"}
    if extra:
        raise RulesError(f"{where}: {kind} takes no key {', '.join(sorted(extra))} "
                         f"(allowed: {', '.join(sorted(allowed))})")
    for key in sorted(required - set(action)):
        raise RulesError(f"{where}: {kind} needs key {key!r}")
    for key, value in action.items():
        if key == "kind":
            continue
        if key in LIST_KEYS:
            if not isinstance(value, list) or (key == "packages" and not value):
                raise RulesError(f"{where}: {key} must be a non-empty list of strings")
            for item in value:
                _check_template(where, item, roots)
        else:
            _check_template(where, value, roots)
    if kind == "pip-install":
        for item in action["packages"]:
            literal = _PLACEHOLDER.sub("", item)
            if _NON_EXACT.search(literal) or ("==" not in item and not placeholders(item)):
                raise RulesError(f"{where}: pip-install takes exact pins only ('name==version'), not {item!r}")
    if kind in ("path-prepend", "path-remove"):
        value = action["value"]
        if not value.startswith("/") and not value.startswith("{"):
            raise RulesError(f"{where}: {kind} value must be an absolute directory, not {value!r}")
    if kind == "preload" and not action["path"].startswith(("/", "{")):
        raise RulesError(f"{where}: preload path must be an absolute library file, not {action['path']!r}")
    _deny(where, action)
    return dict(action)


def _check_when(where: str, when: Any, roots: set[str]) -> dict:
    if not isinstance(when, dict):
        raise RulesError(f"{where}: when must be a table of conditions")
    for key, value in when.items():
        if key not in CONDITIONS:
            raise RulesError(f"{where}: unknown condition {key!r} (expected one of {', '.join(CONDITIONS)})")
        if not isinstance(value, CONDITIONS[key]):
            raise RulesError(f"{where}: condition {key} takes a {CONDITIONS[key].__name__}")
        if key == "env_kind" and not set(value) <= set(ENV_KINDS):
            raise RulesError(f"{where}: env_kind values must be among {', '.join(ENV_KINDS)}")
        if key == "installer" and not set(value) <= set(INSTALLERS):
            raise RulesError(f"{where}: installer values must be among {', '.join(INSTALLERS)}")
        if key in ("has", "missing", "equals", "contains"):
            for path in value:
                _check_template(where, "{" + str(path) + "}", roots)
    return dict(when)


def _kind(value: object) -> str:
    """A TOML value's kind in words, for "expected X, got Y"."""
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), type(value).__name__)


def _remedies_from(path: Path, known: set[str] | None) -> list[Remedy]:
    data, text = load_toml(path)
    lines = _Lines(text)
    extra = set(data) - {"remedy"}
    if extra:
        raise RulesError(f"{path}:1: unknown top-level key {sorted(extra)[0]!r} (expected [[remedy]] tables)")
    rows = data.get("remedy", [])
    if not isinstance(rows, list):
        raise RulesError(f"{path}:1: 'remedy' must be an array of tables ([[remedy]])")
    out = []
    for i, row in enumerate(rows):
        at = f"{path}:{lines.entry(i)}"
        if not isinstance(row, dict):
            raise RulesError(f"{at}: remedy #{i + 1}: expected a table ([[remedy]]), got {_kind(row)}")
        for key, kind in (("id", str), ("symptom", str), ("reason", str), ("actions", list), ("when", dict),
                          ("priority", int)):
            if key in row and (not isinstance(row[key], kind) or (kind is int and isinstance(row[key], bool))):
                raise RulesError(f"{path}:{lines.key(i, key)}: {key}: expected {_kind(kind())}, "
                                 f"got {_kind(row[key])}")
        for key in ("id", "symptom", "reason", "actions", "case"):
            if key not in row:
                what = "example cases ([[remedy.case]])" if key == "case" else f"key {key!r}"
                raise RulesError(f"{at}: remedy {row.get('id', '#%d' % (i + 1))!r} needs {what}")
        unknown = set(row) - {"id", "symptom", "reason", "when", "actions", "case", "priority"}
        if unknown:
            k = sorted(unknown)[0]
            raise RulesError(f"{path}:{lines.key(i, k)}: unknown remedy key {k!r}")
        rid = row["id"]
        if not isinstance(rid, str) or not re.match(r"^[a-z0-9][a-z0-9_.-]*$", rid):
            raise RulesError(f"{path}:{lines.key(i, 'id')}: id must be lowercase letters, digits, . _ -")
        if known is not None and row["symptom"] not in known:
            raise RulesError(f"{path}:{lines.key(i, 'symptom')}: unknown symptom {row['symptom']!r}")
        cases_raw = row["case"]
        if not isinstance(cases_raw, list) or not cases_raw:
            raise RulesError(f"{at}: remedy {rid!r} needs example cases ([[remedy.case]])")
        cases = []
        roots: set[str] | None = None
        for case in cases_raw:
            cline = lines.key(i, "case")
            if not isinstance(case, dict) or "expect" not in case or "evidence" not in case:
                raise RulesError(f"{path}:{cline}: each case needs evidence = {{...}} and expect = [...]")
            if set(case) - {"evidence", "context", "expect"}:
                raise RulesError(f"{path}:{cline}: unknown case key {sorted(set(case) - {'evidence', 'context', 'expect'})[0]!r}")
            keys = set(case["evidence"])
            roots = keys if roots is None else roots & keys
            cases.append(Case(dict(case["evidence"]), dict(case.get("context", {})),
                              tuple(case["expect"]), cline))
        actions = row["actions"]
        if not isinstance(actions, list) or not actions:
            raise RulesError(f"{path}:{lines.key(i, 'actions')}: actions must be a non-empty list of tables")
        checked = []
        for a in actions:
            kind = a.get("kind") if isinstance(a, dict) else None
            where = f"{path}:{lines.key(i, 'kind', f'{kind!s}' if kind else None)}"
            checked.append(check_action(where, a, roots))
        _check_template(f"{path}:{lines.key(i, 'reason')}", row["reason"], roots)
        when = _check_when(f"{path}:{lines.key(i, 'when')}", row.get("when", {}), roots or set())
        prio = row.get("priority", 0)
        if not isinstance(prio, int):
            raise RulesError(f"{path}:{lines.key(i, 'priority')}: priority must be an integer")
        out.append(Remedy(rid, row["symptom"], row["reason"], when, tuple(checked), tuple(cases), prio,
                          f"{path}:{lines.entry(i)}"))
    return out


HARMLESS = ("", "always", "without-driver")


def _errors_from(path: Path, known: set[str] | None) -> list[ErrorSignature]:
    data, text = load_toml(path)
    lines = _Lines(text)
    rows = data.get("error", [])
    if not isinstance(rows, list):
        raise RulesError(f"{path}:1: 'error' must be an array of tables ([[error]])")
    out = []
    for i, row in enumerate(rows):
        at = f"{path}:{lines.entry(i)}"
        for key, kind in (("id", str), ("frameworks", list), ("regex", str), ("symptoms", list), ("examples", list)):
            if key not in row:
                raise RulesError(f"{at}: error {row.get('id', '#%d' % (i + 1))!r} needs key {key!r}")
            if not isinstance(row[key], kind):
                raise RulesError(f"{path}:{lines.key(i, key)}: {key} must be a {kind.__name__}")
        unknown = set(row) - {"id", "frameworks", "regex", "symptoms", "examples", "cause", "fix", "harmless"}
        if unknown:
            k = sorted(unknown)[0]
            raise RulesError(f"{path}:{lines.key(i, k)}: unknown error key {k!r}")
        try:
            re.compile(row["regex"])
        except re.error as exc:
            raise RulesError(f"{path}:{lines.key(i, 'regex')}: regex does not compile: {exc}") from None
        if not row["examples"]:
            raise RulesError(f"{path}:{lines.key(i, 'examples')}: at least one real example message is needed")
        if row.get("harmless", "") not in HARMLESS:
            raise RulesError(f"{path}:{lines.key(i, 'harmless')}: harmless must be one of "
                             f"{', '.join(repr(h) for h in HARMLESS if h)}")
        for name in row["symptoms"]:
            if known is not None and name not in known:
                raise RulesError(f"{path}:{lines.key(i, 'symptoms')}: unknown symptom {name!r}")
        out.append(ErrorSignature(row["id"], tuple(row["frameworks"]), row["regex"], tuple(row["symptoms"]),
                                  tuple(row["examples"]), str(row.get("cause", "")), str(row.get("fix", "")),
                                  f"{path}:{lines.entry(i)}", row.get("harmless", "")))
    return out


def user_rules_dir(environ=None) -> Path | None:
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or ""
    if not os.path.isabs(base):  # empty or relative: ignored, as the XDG spec asks (never ./relcfg)
        home = environ.get("HOME") or os.path.expanduser("~")
        base = os.path.join(home, ".config")
    path = Path(base) / "fixdnn" / "rules"
    return path if path.is_dir() else None


def _merge(items: list, new: list, label: str) -> list:
    """Replace by id (keeping position), append new ids; a duplicate id inside one layer is an error."""
    seen: dict[str, str] = {}
    for item in new:
        if item.id in seen:
            raise RulesError(f"{item.source}: duplicate {label} id {item.id!r} (first at {seen[item.id]})")
        seen[item.id] = item.source
    index = {item.id: n for n, item in enumerate(items)}
    out = list(items)
    for item in new:
        if item.id in index:
            out[index[item.id]] = item
        else:
            out.append(item)
    return out


def check_extra(extra) -> list[Path]:
    """Each ``--rules DIR`` as a Path, after checking it is a folder holding rules fixdnn reads."""
    out = []
    for d in extra:
        p = Path(d)
        if not p.is_dir():
            raise RulesError(f"--rules {d}: not a directory")
        _check_recognised(p, str(d))
        out.append(p)
    return out


def _check_recognised(folder: Path, shown: str) -> None:
    """A --rules DIR must hold something fixdnn reads; a folder it would silently ignore is an error
    naming what is there and what was expected (``DIR/bad.toml`` belongs in ``DIR/remedies/``)."""
    remedies = folder / "remedies"
    if (folder / "errors.toml").is_file() or (remedies.is_dir() and any(remedies.glob("*.toml"))):
        return
    try:
        names = sorted(e.name + ("/" if e.is_dir() else "") for e in os.scandir(folder))
    except OSError as exc:
        raise RulesError(f"--rules {shown}: cannot read ({exc.strerror})") from None
    found = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "") if names else "nothing"
    stray = [n for n in names if n.endswith(".toml")]
    hint = f" (move {stray[0]} to {shown.rstrip('/')}/remedies/{stray[0]}?)" if stray else ""
    raise RulesError(f"--rules {shown}: nothing fixdnn recognises: found {found}; expected remedies/*.toml "
                     f"and/or errors.toml{hint}")


# Each rules file parsed and checked once per process while it is unchanged: planning, ``explain`` and the
# checks of one process share it (parsing the shipped rules is 30 ms). Keyed by what the answer depends on:
# the reader, the file, its identity (device, inode, size, modification time) and the symptom names allowed.
_PARSED: dict[tuple, tuple[list[int], tuple]] = {}


def _parsed(read, path: Path, known: set[str] | None) -> list:
    try:
        ident = identity(path.stat())
    except OSError:
        return read(path, known)  # the reader says what is wrong with it
    key = (read.__name__, str(path), None if known is None else frozenset(known))
    hit = _PARSED.get(key)
    if hit is None or hit[0] != ident:
        hit = _PARSED[key] = (ident, tuple(read(path, known)))
    return list(hit[1])


def load(extra: list[str | os.PathLike] | tuple = (), *, environ=None, shipped: Path | None = None,
         known: set[str] | None = None, include_user: bool = True, errors: bool = True) -> Rules:
    """Shipped rules, then the user's config dir, then each ``--rules DIR``: later layers win by id.
    ``errors=False`` skips ``errors.toml`` (planning does not need it). ``known`` is the set of symptom
    names a rule may name (the symptom stage passes its registry: :func:`fixdnn.symptoms.registry.load_rules`);
    None checks no names."""
    layers: list[Path] = [shipped or rules_dir()]
    if include_user:
        user = user_rules_dir(environ)
        if user is not None:
            layers.append(user)
    layers += check_extra(extra)
    remedies: list[Remedy] = []
    signatures: list[ErrorSignature] = []
    for layer in layers:
        layer_rem: list[Remedy] = []
        for f in sorted((layer / "remedies").glob("*.toml")) if (layer / "remedies").is_dir() else ():
            layer_rem += _parsed(_remedies_from, f, known)
        remedies = _merge(remedies, layer_rem, "remedy")
        if errors and (layer / "errors.toml").is_file():
            signatures = _merge(signatures, _parsed(_errors_from, layer / "errors.toml", known), "error")
    # Priority: explicit priority first, then load order.
    ordered = [Remedy(r.id, r.symptom, r.reason, r.when, r.actions, r.cases, r.priority * 1000 + n, r.source)
               for n, r in enumerate(remedies)]
    return Rules(tuple(ordered), tuple(signatures), tuple(str(p) for p in layers))


__all__ = ["CONDITIONS", "Case", "ErrorSignature", "FILTERS", "Remedy", "Rules", "RulesError", "check_action",
           "check_extra", "load", "placeholders", "user_rules_dir"]
