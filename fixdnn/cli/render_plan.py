"""Show a plan without carrying it out: the exact commands, and the diff of every file env actions would
change (``etc/fixdnn/env.toml``, the rendered scripts, the activate blocks), rendered with ``fixdnn.shell``
and never written."""

from __future__ import annotations

import difflib
from pathlib import Path

from fixdnn.model.actions import ENV_KINDS, PERSISTED_KINDS, Action, Plan
from fixdnn.plan.reach import reach

_OP = {"env-set": "set", "env-unset": "unset", "path-prepend": "path-prepend", "path-remove": "path-remove"}


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8", "surrogateescape")
    except OSError:
        return ""


def env_file_diffs(plan: Plan, prefix: str | None,
                   kernelspecs: tuple[str, ...] = ()) -> tuple[list[tuple[str, str]], str | None]:
    """[(path, unified diff)] the env actions would produce (kernel.json files of ``kernelspecs`` too),
    or ([], why not)."""
    env_actions = [a for a in plan.actions if a.kind in PERSISTED_KINDS]
    if not env_actions:
        return [], None
    if not prefix:
        return [], "no environment prefix: variables cannot be persisted"
    from fixdnn.shell.envfile import EnvFile, EnvFileError, EnvOp, Preload
    from fixdnn.shell.install import ShellInstallError, planned_changes

    try:
        current = EnvFile.load(EnvFile.path_for(prefix))
        ops = [EnvOp(_OP[a.kind], a.name or "", None if a.kind == "env-unset" else a.value, a.reason,
                     ", ".join(a.fixes)) for a in env_actions if a.kind in ENV_KINDS]
        pre = [Preload(a.path or "", a.reason, ", ".join(a.fixes)) for a in env_actions if a.kind == "preload"]
        changes = planned_changes(prefix, EnvFile(current.ops + tuple(ops), current.preloads + tuple(pre)),
                                  kernelspecs=kernelspecs)
    except (ShellInstallError, EnvFileError) as exc:
        return [], str(exc)
    out = []
    for path, text in changes:
        old = _read(path)
        diff = "".join(difflib.unified_diff(old.splitlines(True), text.splitlines(True),
                                            fromfile=str(path) if old else "/dev/null", tofile=str(path)))
        out.append((str(path), diff))
    return out, None


def _write_file_diff(a: Action) -> str:
    old = _read(Path(a.path or ""))
    return "".join(difflib.unified_diff(old.splitlines(True), (a.content or "").splitlines(True),
                                        fromfile=a.path or "" if old else "/dev/null", tofile=a.path or ""))


def action_dict(a: Action, python: str | None, kernelspecs: int = 0) -> dict:
    """``kernelspecs``: how many kernelspecs running the environment get its variables (for ``reach``)."""
    out: dict = {"kind": a.kind, "fixes": list(a.fixes), "remedy": a.remedy, "reason": a.reason,
                 "proven": a.proven, "proof": a.proof}
    if a.kind in ("pip-install", "pip-uninstall"):
        out["command"] = a.command(python)
        out["packages"] = list(a.packages)
        out["available"] = a.available
        out["check"] = a.check
        if a.hashes:
            out["hashes"] = list(a.hashes)
    elif a.kind in ENV_KINDS:
        out["name"] = a.name
        out["value"] = a.value
        out["describe"] = a.describe(python)
    elif a.kind == "preload":
        out["path"] = a.path
        out["describe"] = a.describe(python)
    elif a.kind == "write-file":
        out["path"] = a.path
        out["diff"] = _write_file_diff(a)
    else:
        out["text"] = a.text
    out["reach"] = [{"where": r.where, "reaches": r.reaches, "note": r.note} for r in reach(a, kernelspecs)]
    return out


def plan_dict(plan: Plan, python: str | None, prefix: str | None, kernelspecs: tuple = ()) -> dict:
    """``kernelspecs``: the Kernelspec facts that run this environment (their kernel.json gets its variables)."""
    paths = tuple(k.path for k in kernelspecs) if any(a.kind in ENV_KINDS for a in plan.actions) else ()
    diffs, why = env_file_diffs(plan, prefix, paths)
    notes = list(plan.notes) + ([f"environment changes: {why}"] if why else [])
    notes += [f"outside the environment: kernelspec {k.path} ({k.location} Jupyter data dir) gets this "
              "environment's variables in its 'env'" for k in kernelspecs if k.path in paths and not k.inside]
    return {
        "kernelspecs": [{"path": k.path, "name": k.name, "location": k.location, "inside": k.inside}
                        for k in kernelspecs if k.path in paths],
        "actions": [action_dict(a, python, len(paths)) for a in plan.actions],
        "files": [{"path": p, "diff": d, **_counts(d)} for p, d in diffs],
        "notes": notes,
        "unfixed": list(plan.unfixed),
        "runnable": plan.runnable,
        "proven": not plan.unproven,
        "alternatives": [{"symptom": s, "remedy": r, "status": st} for s, r, st in plan.alternatives],
    }


def _counts(diff: str) -> dict:
    lines = diff.splitlines()
    return {"added": sum(1 for ln in lines if ln.startswith("+") and not ln.startswith("+++")),
            "removed": sum(1 for ln in lines if ln.startswith("-") and not ln.startswith("---"))}


def render_plan(data: dict, console, *, diff: bool = False) -> None:
    """Print the ``plan_dict`` for a person; file changes as a summary, the full diff with ``diff``."""
    from rich.markup import escape

    console.print()
    if not data["actions"] and not data["unfixed"]:
        console.print("[bold]plan:[/bold] nothing to change")
        return
    console.print("[bold]plan[/bold] (dry run: nothing was changed)")
    for n, a in enumerate(data["actions"], 1):
        line = a.get("command") or a.get("describe") or (f"write {a['path']}" if a["kind"] == "write-file"
                                                          else f"manual: {a.get('text', '')}")
        status = ""
        if a["kind"] == "pip-install":
            status = {True: " [green](available)[/green]", False: " [red](UNAVAILABLE)[/red]",
                      None: " [yellow](not checked)[/yellow]"}[a["available"]]
        console.print(f"{n}. {escape(line)}{status}")
        console.print(f"   [dim]fixes:[/dim] {escape(', '.join(a['fixes']))}  [dim]rule:[/dim] {escape(a['remedy'])}")
        console.print(f"   [dim]why:[/dim] {escape(a['reason'])}")
        if a.get("check"):
            console.print(f"   [dim]checked:[/dim] {escape(a['check'])}")
        for r in a.get("reach", ()):
            where = escape(r["where"])
            console.print(f"   [dim]{where}:[/dim] " + (escape(r["reaches"]) if r["reaches"] else
                                                       f"[yellow]not reached[/yellow]: {escape(r['note'])}"))
        if a.get("proven") is True:
            console.print(f"   [dim]proven:[/dim] {escape(a['proof'])}")
        elif a.get("proven") is False:
            console.print(f"   [red]NOT PROVEN[/red]: {escape(a['proof'])}")
        if a.get("diff") and diff:
            console.print(escape(a["diff"].rstrip("\n")))
    if data["files"]:
        console.print("files changed" + ("" if diff else " (full diff: --diff or -v)") + ":")
    for f in data["files"]:
        console.print(f"  {escape(f['path'])}: +{f['added']} -{f['removed']} lines")
        if diff:
            console.print(escape(f["diff"].rstrip("\n")), soft_wrap=True)
    shown = [x for x in data.get("alternatives", []) if not x["status"].startswith("chosen")]
    if shown:
        console.print("alternatives (choose with --use REMEDY-ID, leave out with --skip REMEDY-ID):")
        for x in shown:
            console.print(f"  {escape(x['symptom'])}: {escape(x['remedy'])}: {escape(x['status'])}")
    for name in data["unfixed"]:
        console.print(f"[yellow]no automatic fix[/yellow] for {escape(name)}")
    for note in data["notes"]:
        console.print(f"[dim]note:[/dim] {escape(note)}")
    if not data["runnable"]:
        console.print("[red]this plan cannot run as shown: a pinned wheel is not available[/red]")
    if not data.get("proven", True):
        console.print("[red]the model does not show this plan removing its symptoms: apply refuses it "
                      "unless given --force-unproven[/red]")


__all__ = ["action_dict", "env_file_diffs", "plan_dict", "render_plan"]
