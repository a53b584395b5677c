"""The typer application: thin commands that build a result and hand it to one renderer.

Every failure of fixdnn itself, or of the user's input, becomes one line on stderr and exit code 2
(see :func:`run`); diagnoses exit 0 when healthy and 1 when an error-level symptom is found.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

app = typer.Typer(
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    no_args_is_help=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Find why cuDNN / CUDA / oneDNN / MKL / OpenMP fail in a deep-learning environment, and repair it.",
)


class UsageError(Exception):
    """A problem with what the user asked for: reported in one line, exit 2."""



def one_line(text: str) -> str:
    """A message as one line: a path with a newline (or a carriage return) is printed escaped."""
    return text.replace("\n", "\\n").replace("\r", "\\r")

def _options(ctx: typer.Context) -> dict:
    return ctx.obj if isinstance(ctx.obj, dict) else {}


def _host(opts: dict, environ=None):
    from fixdnn.target.host import Host

    root = opts.get("root")
    if root is not None:
        import os

        if not os.path.isdir(root):
            raise UsageError(f"--root {root}: not a directory")
    return Host(root=root, environ=environ)


def _gather_for_plan(opts: dict):
    """The facts a plan starts from: the environment as a shell that activated it sees it, so a repair that
    already lives in its activation scripts (etc/fixdnn/env.toml) is not planned a second time."""
    facts_value = _gather(opts)
    if opts.get("facts_file") or opts.get("root") or not facts_value.target.prefix:
        return facts_value
    import os

    from fixdnn.probes.suite import probe_environ

    activated = probe_environ(facts_value.target.prefix, os.environ)
    if activated == dict(os.environ):
        return facts_value
    return _gather(opts, environ=activated)


def _gather(opts: dict, environ=None):
    from fixdnn.facts import gather, loads_json
    from fixdnn.target.interpreter import TargetSpec

    facts_file = opts.get("facts_file")
    if facts_file:
        try:
            with open(facts_file, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise UsageError(f"--facts {facts_file}: cannot read ({exc.strerror})") from None
        try:
            saved = loads_json(text, facts_file)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if opts.get("lock") is None:
            return saved
        from dataclasses import replace

        from fixdnn.facts.lockfile import conda_subdir

        return replace(saved, lock=_read_lock(opts["lock"], conda_subdir(saved.target.platform, saved.target.machine)))
    from fixdnn.facts.lockfile import LockfileError

    from fixdnn.cli.progress import status

    try:
        with status(opts, "reading the environment: packages, ELF files, loader cache") as shown:
            return gather(_host(opts, environ), TargetSpec(python=opts.get("python"), prefix=opts.get("prefix")),
                          verify_all=bool(opts.get("verify_all")), lock=opts.get("lock"),
                          save_cache=not opts.get("dry_run"), notice=shown.update)
    except LockfileError as exc:
        raise UsageError(f"--lock {exc}" if not isinstance(exc, _lock_missing()) else _conda_missing()) from None


def _lock_missing():
    from fixdnn.facts.lockfile import CondaLockMissing

    return CondaLockMissing


def _conda_missing() -> str:
    """conda-lock is missing: the exact command that adds it to this fixdnn's own installation."""
    from fixdnn.cli.selfinstall import hint

    return f"conda-lock is not installed (lockfiles need fixdnn's conda extra): {hint('conda')}"


def _read_lock(path: str, platform: str | None):
    from fixdnn.facts.lockfile import LockfileError, read

    try:
        return read(path, platform)
    except LockfileError as exc:
        raise UsageError(f"--lock {exc}" if not isinstance(exc, _lock_missing()) else _conda_missing()) from None


def _emit_json(data: dict) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def diagnose(opts: dict) -> int:
    from fixdnn.cli.report import Report, render_text, to_dict
    from fixdnn.knowledge import compat as compat_mod
    from fixdnn.symptoms.registry import diagnose as run_checks

    facts = _gather_for_plan(opts) if opts.get("dry_run") else _gather(opts)
    report = Report(facts, run_checks(facts, compat_mod.load()))
    plan_data = None
    if opts.get("dry_run"):
        from fixdnn.cli.render_plan import plan_dict

        plan_value = _build_plan(facts, report.symptoms, opts, host=_host(opts))
        specs = _kernelspecs(opts, facts.target.prefix) if facts.target.prefix else ()
        plan_data = plan_dict(plan_value, facts.target.python, facts.target.prefix, specs)
        report = Report(report.facts, report.symptoms, {**(report.extra or {}), "plan": plan_data})
    if opts.get("json"):
        _emit_json(to_dict(report))
    else:
        from rich.console import Console

        console = Console(highlight=False, soft_wrap=True)
        console.on_broken_pipe = _broken_pipe  # rich would exit 1 itself, which means "problems found" here
        render_text(report, console, verbose=bool(opts.get("verbose")), quiet=bool(opts.get("quiet")))
        if plan_data is not None:
            from fixdnn.cli.render_plan import render_plan

            render_plan(plan_data, console, diff=bool(opts.get("diff") or opts.get("verbose")))
    return report.exit_code


def _broken_pipe() -> None:
    raise BrokenPipeError  # handled once, in run()


def _stdout_reader_gone() -> bool:
    """True when stdout is a pipe nobody reads any more (poll reports POLLERR on its write end)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), 0)  # POLLERR and POLLHUP are reported whatever is asked
        return any(events & select.POLLERR for _fd, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def _reader_went_away() -> int:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit cannot fail again
    return 128 + 13  # what a shell reports for a writer ended by SIGPIPE


def _print_version(value: bool) -> None:
    if value:
        from fixdnn import __version__

        sys.stdout.write(f"fixdnn {__version__}\n")
        raise typer.Exit(0)


@app.callback(invoke_without_command=True)
def main(
    ctx: typer.Context,
    python: Optional[str] = typer.Option(None, "--python", metavar="PATH",
                                         help="Interpreter of the environment (a path, or a name on PATH)."),
    prefix: Optional[str] = typer.Option(None, "--prefix", metavar="DIR", help="Root folder of the environment."),
    root: Optional[str] = typer.Option(None, "--root", metavar="DIR", help="Treat DIR as / (a mounted image, a test tree)."),
    json_out: bool = typer.Option(False, "--json", help="Print one versioned JSON object instead of text."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only problems (and errors); no progress."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show everything: every loader step, a probe's whole output."),
    facts_file: Optional[str] = typer.Option(None, "--facts", metavar="FILE",
                                             help="Diagnose a facts file saved with 'fixdnn facts'."),
    version: bool = typer.Option(False, "--version", "-V", is_eager=True, callback=_print_version,
                                 help="Print fixdnn's version and exit."),
    verify_all: bool = typer.Option(False, "--verify-all",
                                    help="Hash every file of every installed package against its record (no cache trusted); by default only DNN packages, by size, and the libraries that would load by hash."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Also show the repair plan (commands, file diffs); change nothing."),
    offline: bool = typer.Option(False, "--offline", help="Plan without network: no index queries, prefer copies on disk."),
    rules: Optional[list[str]] = typer.Option(None, "--rules", metavar="DIR",
                                              help="Extra rules (DIR/remedies/*.toml, DIR/errors.toml); wins by id."),
    lock: Optional[str] = typer.Option(None, "--lock", metavar="FILE",
                                       help="Compare with this conda-lock lockfile (lockfile-drift); needs fixdnn[conda]."),
    use: Optional[list[str]] = typer.Option(None, "--use", metavar="REMEDY-ID",
                                            help="Prefer this remedy (ids: see the alternatives of --dry-run)."),
    skip: Optional[list[str]] = typer.Option(None, "--skip", metavar="REMEDY-ID", help="Never plan this remedy."),
    diff: bool = typer.Option(False, "--diff", help="With --dry-run: the full diff of every file changed (also -v)."),
) -> None:
    """Diagnose the environment: the active venv / conda env, the project's .venv, or --python / --prefix.

    Options may be given before or after the command (fixdnn verify --python PATH).
    """
    ctx.obj = {"python": python, "prefix": prefix, "root": root, "json": json_out, "quiet": quiet,
               "verbose": verbose, "facts_file": facts_file, "verify_all": verify_all, "dry_run": dry_run,
               "offline": offline, "rules": list(rules or ()), "lock": lock,
               "use": list(use or ()), "skip": list(skip or ()), "diff": diff}
    if rules:  # checked up front: a folder fixdnn would ignore is a mistake to say now, whatever the command
        from fixdnn.knowledge.rules import check_extra

        check_extra(rules)
    _report_interrupted(ctx.obj)
    if ctx.invoked_subcommand is None:
        raise typer.Exit(diagnose(ctx.obj))


@app.command()
def facts(ctx: typer.Context) -> None:
    """Print the gathered facts as JSON (diagnose them again anywhere with --facts FILE)."""
    from fixdnn.facts import dumps

    sys.stdout.write(dumps(_gather(_options(ctx))) + "\n")


@app.command()
def symptoms(ctx: typer.Context) -> None:
    """List every symptom fixdnn knows: code, name, severity, title."""
    from fixdnn.symptoms.registry import load_all

    checks = sorted(load_all().values(), key=lambda c: c.code)
    if _options(ctx).get("json"):
        _emit_json({"schema": "fixdnn.symptoms/1",
                    "symptoms": [{"code": c.code, "name": c.name, "severity": c.severity, "title": c.title}
                                 for c in checks]})
        return
    for c in checks:
        sys.stdout.write(f"{c.code}  {c.name:<32} {c.severity:<8} {c.title}\n")


@app.command("lock")
def lock_command(
    ctx: typer.Context,
    output: str = typer.Option(..., "--output", "-o", metavar="FILE", help="Lockfile to write (conda-lock format, e.g. conda-lock.yml)."),
) -> None:
    """Write the environment's conda and pip packages as a conda-lock lockfile (needs fixdnn[conda])."""
    from fixdnn.facts.lockfile import LockfileError, available
    from fixdnn.repair.lockwrite import write

    opts = _options(ctx)
    if not available():
        raise UsageError(_conda_missing())
    if opts.get("facts_file"):
        raise UsageError("lock reads the live environment's records; it cannot use --facts")
    facts_value = _gather({**opts, "lock": None})
    try:
        got = write(output, _host(opts), facts_value)
    except LockfileError as exc:
        raise UsageError(str(exc)) from None
    conda = sum(1 for e in got.entries if e.manager == "conda")
    if opts.get("json"):
        _emit_json({"schema": "fixdnn.lock/1", "output": output, "platform": got.platform, "conda_packages": conda,
                    "pip_packages": len(got.entries) - conda, "notes": list(got.notes)})
        return
    out = sys.stdout
    out.write(f"wrote {output}: {conda} conda and {len(got.entries) - conda} pip packages for {got.platform}\n")
    for note in got.notes:
        out.write(f"  note: {note}\n")


@app.command("env")
def env_command(ctx: typer.Context) -> None:
    """Show what fixdnn changes in the environment (activation scripts, in-process hook, Jupyter kernelspecs)."""
    from fixdnn.facts.kernelspecs import find
    from fixdnn.shell.envfile import EnvFileError
    from fixdnn.shell.install import describe
    from fixdnn.shell.preload import describe as describe_preload

    opts = _options(ctx)
    prefix = _target_prefix(opts)
    try:
        ops = describe(prefix)
    except EnvFileError as exc:
        raise UsageError(str(exc)) from None
    hook = describe_preload(prefix)
    specs = find(_host(opts), prefix)
    if opts.get("json"):
        _emit_json({"schema": "fixdnn.env/1", "prefix": prefix, "operations": ops, "in_process": hook,
                    "kernelspecs": [k.to_dict() for k in specs]})
        return
    out = sys.stdout
    if not ops and not hook["preload"]:
        out.write(f"fixdnn changes nothing in {prefix}\n")
    for op in ops:
        value = f" {op['value']}" if op["value"] is not None else ""
        why = f"  # {op['reason']}" if op["reason"] else ""
        fixes = f" (fixes {op['fixes']})" if op["fixes"] else ""
        out.write(f"{op['op']} {op['name']}{value}{why}{fixes}\n")
    for lib in hook["preload"]:
        out.write(f"preload {lib['path']}" + (f"  # {lib['reason']}" if lib.get("reason") else "") + "\n")
    if hook["files"]:
        state = "installed" if hook["installed"] else "INCOMPLETE (run 'fixdnn apply' again or 'fixdnn rollback')"
        out.write(f"in-process hook: {state}: {', '.join(hook['files'])}\n")
    for op in hook["ops"]:
        if not op.get("in_process"):
            out.write(f"  not in-process: {op['op']} {op['name']}: {op.get('effect')}\n")
    for k in specs:
        runs = "runs this environment" if k.runs_env else f"runs {k.argv0 or '?'}"
        extra = "; shadowed by an earlier kernelspec of that name" if k.shadowed else ""
        sets = f"; fixdnn sets {', '.join(k.fixdnn)}" if k.fixdnn else ""
        out.write(f"kernelspec {k.name}: {k.path} ({k.location}; {k.error or runs}{sets}{extra})\n")


def _kernelspecs(opts: dict, prefix: str) -> tuple:
    """The readable kernelspecs that start this environment's interpreter (their env gets its variables)."""
    from fixdnn.facts.kernelspecs import find

    return tuple(k for k in find(_host(opts), prefix) if k.runs_env and k.error is None and not k.shadowed)


def _report_interrupted(opts: dict) -> None:
    """One line on stderr when a transaction was interrupted (a crash, a kill) and not rolled back."""
    try:
        from fixdnn.repair.transaction import interrupted_anywhere

        # the environment named on the command line or active in this shell: no interpreter is run for it
        here = (opts.get("prefix"), os.environ.get("VIRTUAL_ENV"), os.environ.get("CONDA_PREFIX"))
        found = interrupted_anywhere(tuple(os.path.abspath(p) for p in here if p))
    except Exception:  # the notice must never break a command
        return
    if found:
        import shlex

        prefix, txn_id = found[-1]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        sys.stderr.write(f"fixdnn: transaction {txn_id} on {prefix} was interrupted{more}; undo it with "
                         f"'fixdnn --prefix {shlex.quote(prefix)} rollback'\n")


def _target_prefix(opts: dict, *, required: bool = True) -> str | None:
    """The environment's folder: --prefix, the active environment, the project's .venv, or what the
    --python interpreter says. ``required=False``: None when there is no environment (a bare python3)."""
    from fixdnn.target.interpreter import TargetSpec, choose, probe

    host = _host(opts)
    python, prefix = choose(host, TargetSpec(python=opts.get("python"), prefix=opts.get("prefix")))
    if prefix is None and python is not None and opts.get("python"):
        data, _why = probe(host, python)
        prefix = (data or {}).get("prefix")
    if prefix is None and required:
        raise UsageError("no environment: activate one, or give --prefix DIR or --python PATH")
    return prefix


@app.command("apply")
def apply_command(
    ctx: typer.Context,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask; apply the plan."),
    force_unproven: bool = typer.Option(False, "--force-unproven",
                                        help="Apply steps the model could not show removing their symptom."),
) -> None:
    """Diagnose, show the repair plan, ask, then apply it in one transaction (verified; undo: rollback)."""
    from fixdnn.knowledge import compat as compat_mod
    from fixdnn.symptoms.registry import diagnose as run_checks

    opts = _options(ctx)
    if opts.get("facts_file") or opts.get("root"):
        raise UsageError("apply changes a live environment; it cannot use --facts or --root")
    facts_value = _gather_for_plan(opts)
    from fixdnn.repair import transaction as txnmod

    head = None
    if facts_value.target.prefix:
        try:  # refused before planning, not after it: a plan made while another fixdnn runs is stale
            txnmod.refuse_if_busy(facts_value.target.prefix)
        except txnmod.LockError as exc:
            raise UsageError(str(exc)) from None
        head = txnmod.head(facts_value.target.prefix)
    found = run_checks(facts_value, compat_mod.load())
    plan = _build_plan(facts_value, found, opts)
    if opts.get("json"):
        raise typer.Exit(_apply_json(plan, facts_value, found, yes, force_unproven, head))
    raise typer.Exit(_apply(plan, facts_value, found, yes, opts, force_unproven, head))


def _refusal(plan) -> str:
    """Why apply will not run a plan with unproven steps (one line)."""
    ids = ", ".join(dict.fromkeys(a.remedy for a in plan.unproven))
    return (f"refused: the model does not show {ids} removing its symptom ({plan.unproven[0].proof}); "
            "nothing changed. Pass --force-unproven to apply it anyway, or --skip it")


def _build_plan(facts_value, found, opts: dict, host=None):
    from fixdnn.plan.build import PlanInputError, build_plan

    try:
        return build_plan(facts_value, found, opts, host=host)
    except PlanInputError as exc:
        raise UsageError(str(exc)) from None


def _apply_json(plan, facts_value, found, yes: bool, force_unproven: bool = False,
                head: str | None = None) -> int:
    """``apply --json``: one fixdnn.apply/1 object; it cannot ask, so it needs --yes to change anything."""
    from fixdnn.cli.render_plan import plan_dict
    from fixdnn.cli.report import symptom_entry
    from fixdnn.repair.acceptance import verifier
    from fixdnn.repair.apply import ApplyError, Target, apply_plan
    from fixdnn.repair.transaction import LockError, TxnError

    target = Target.from_info(facts_value.target)
    if plan.actions and not yes:
        raise UsageError("apply --json cannot ask before changing anything; add --yes (or use --dry-run --json)")
    specs = _kernelspecs({}, target.prefix)  # apply refuses --root: the live host
    target = _with_kernelspecs(target, plan, specs)
    errors = any(s.severity == "error" for s in found)
    data = {"schema": "fixdnn.apply/1", "target": {"python": target.python, "prefix": target.prefix},
            "plan": plan_dict(plan, target.python, target.prefix, specs), "outcome": "nothing-to-do", "txn_id": None,
            "reason": "", "steps_done": 0, "manual": [], "symptoms": [symptom_entry(s) for s in found]}
    code = 1 if errors else 0
    if plan.unproven and not force_unproven:
        data.update(outcome="refused-unproven", reason=_refusal(plan))
        code = 1
    elif plan.actions:
        try:
            result = apply_plan(plan, target, verify=verifier(plan, found, target.prefix, target.python),
                                expect_head=head, allow_outside=True)  # the plan said so; --yes given
        except LockError as exc:
            raise UsageError(str(exc)) from None
        except (ApplyError, TxnError) as exc:
            data.update(outcome="failed", reason=str(exc))
            code = 1
        else:
            data.update(outcome=result.outcome, txn_id=result.txn_id, reason=result.reason,
                        steps_done=result.steps_done, manual=list(result.manual))
            code = {"applied": 0, "nothing-to-do": code}.get(result.outcome, 1)
    _emit_json(data)
    return code


def _with_kernelspecs(target, plan, specs):
    """The target with the kernelspecs whose env the plan's variable changes go to (none without any)."""
    import dataclasses

    from fixdnn.model.actions import ENV_KINDS

    if not any(a.kind in ENV_KINDS for a in plan.actions):
        return target
    return dataclasses.replace(target, kernelspecs=tuple(k.path for k in specs))


def _shell_advice(plan, target) -> str | None:
    """What the current shell must do to see a repair that lives in the activation scripts."""
    from fixdnn.model.actions import ENV_KINDS

    if not any(a.kind in ENV_KINDS for a in plan.actions):
        return None
    import os
    import shlex

    if os.path.isdir(os.path.join(target.prefix, "conda-meta")):
        again = f"conda deactivate && conda activate {shlex.quote(target.prefix)}"
    else:
        again = f"deactivate; . {shlex.quote(os.path.join(target.prefix, 'bin', 'activate'))}"
    return (f"the repair is in the environment's activation scripts: in a shell where it is active, run "
            f"'{again}' (then 'hash -r'); new shells and 'fixdnn run' see it already")


def _apply(plan, facts_value, found, yes: bool, opts: dict, force_unproven: bool = False,
           head: str | None = None) -> int:
    from fixdnn.plan.reach import reach
    from fixdnn.repair.acceptance import verifier
    from fixdnn.repair.apply import ApplyError, Target, apply_plan
    from fixdnn.repair.transaction import LockError, TxnError

    target = Target.from_info(facts_value.target)
    specs = _kernelspecs({}, target.prefix)  # apply refuses --root: the live host
    target = _with_kernelspecs(target, plan, specs)
    out = sys.stdout
    if not plan.actions:
        out.write("nothing to apply" + (f"; not fixable here: {', '.join(plan.unfixed)}" if plan.unfixed else "")
                  + "\n")
        return 1 if any(s.severity == "error" for s in found) else 0
    out.write(f"plan for {target.prefix}:\n")
    if facts_value.target.chosen_because:
        out.write(f"  (chosen because: {facts_value.target.chosen_because})\n")
    for n, action in enumerate(plan.actions, 1):
        out.write(f"  {n}. {action.describe(target.python)}\n")
        if action.reason:
            out.write(f"     why: {action.reason}\n")
        for r in reach(action, len(target.kernelspecs)):
            out.write(f"     {r.where}: {r.reaches or 'not reached: ' + r.note}\n")
        if action.proof and action.kind != "manual":
            out.write(f"     {'proven' if action.proven else 'NOT PROVEN'}: {action.proof}\n")
    for k in specs:
        if k.path in target.kernelspecs:
            where = "inside the environment" if k.inside else f"OUTSIDE the environment ({k.location} Jupyter data dir)"
            out.write(f"  kernelspec {k.name}: {k.path} gets the variables in its 'env' ({where})\n")
    for note in plan.notes:
        out.write(f"  note: {note}\n")
    out.flush()
    if plan.unproven and not force_unproven:
        sys.stderr.write(f"fixdnn: {_refusal(plan)}\n")
        return 1
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("apply asks before changing anything; pass --yes when not at a terminal")
        if not typer.confirm("apply this plan?", default=False):
            out.write("nothing changed\n")
            return 1
    from fixdnn.cli.progress import status

    try:
        with status(opts, "applying the plan") as shown:
            def event(msg: str) -> None:
                shown.log(msg)
                shown.update(f"{msg} (running)")

            result = apply_plan(plan, target, verify=verifier(plan, found, target.prefix, target.python),
                                expect_head=head, allow_outside=True, on_event=event)  # shown, confirmed
    except LockError as exc:
        raise UsageError(str(exc)) from None
    except (ApplyError, TxnError) as exc:
        sys.stderr.write(f"fixdnn: {one_line(str(exc))}\n")
        return 1
    for text in result.manual:
        out.write(f"manual step (not done by fixdnn): {text}\n")
    if result.outcome == "applied":
        out.write(f"applied transaction {result.txn_id}; undo with 'fixdnn rollback {result.txn_id}'\n")
        advice = _shell_advice(plan, target)
        if advice:
            out.write(advice + "\n")
        return 0
    if result.outcome == "nothing-to-do":
        return 1 if any(s.severity == "error" for s in found) else 0
    sys.stderr.write(f"fixdnn: {one_line(result.reason)}; rolled back transaction {result.txn_id}, nothing changed\n")
    return 1


@app.command("rollback")
def rollback_command(
    ctx: typer.Context,
    txn_id: Optional[str] = typer.Argument(None, metavar="[ID]", help="Transaction to undo (default: the latest)."),
) -> None:
    """Undo the latest transaction (finished or interrupted), or transaction ID (newer ones first)."""
    from fixdnn.repair.transaction import TxnError, rollback

    opts = _options(ctx)
    prefix = _target_prefix(opts)
    try:
        record, count = rollback(prefix, txn_id)
    except TxnError as exc:
        raise UsageError(str(exc)) from None
    if opts.get("json"):
        _emit_json({"schema": "fixdnn.rollback/1", "prefix": prefix, "txn_id": record.id, "steps_undone": count})
        return
    sys.stdout.write(f"rolled back transaction {record.id} ({count} step{'s' if count != 1 else ''} undone)\n")


@app.command("history")
def history_command(ctx: typer.Context) -> None:
    """List this environment's transactions: id, time, actions, outcome."""
    from fixdnn.repair.apply import history

    opts = _options(ctx)
    prefix = _target_prefix(opts)
    rows = history(prefix)
    if opts.get("json"):
        _emit_json({"schema": "fixdnn.history/1", "prefix": prefix, "transactions": rows})
        return
    if not rows:
        sys.stdout.write(f"no transactions in {prefix}\n")
        return
    for row in rows:
        sys.stdout.write(f"{row['id']}  {row['time']}  {row['outcome']}\n")
        for action in row["actions"]:
            sys.stdout.write(f"    {action}\n")
        if row["reason"]:
            sys.stdout.write(f"    reason: {row['reason']}\n")


def _try_diagnose(opts: dict):
    """(facts, symptoms, why-not): the target's diagnosis, or the reason there is none (never raises)."""
    from fixdnn.knowledge import compat as compat_mod
    from fixdnn.symptoms.registry import diagnose as run_checks
    from fixdnn.target.interpreter import TargetError

    try:
        facts_value = _gather(opts)
    except (TargetError, UsageError) as exc:
        return None, (), str(exc)
    return facts_value, run_checks(facts_value, compat_mod.load()), ""


def _explanation(opts: dict, text: str):
    from fixdnn.probes.explain import explain, is_harmless, match_text, plan_for
    from fixdnn.symptoms.registry import load_rules

    matches = match_text(text, load_rules(list(opts.get("rules") or ())).errors)
    if not matches or all(is_harmless(m.signature) for m in matches):
        return explain(matches)  # nothing to diagnose for: unknown text, or only known noise
    facts_value, found, why = _try_diagnose(opts)
    planner = plan_for(facts_value, _host(opts), opts.get("rules") or ()) if facts_value is not None else None
    return explain(matches, facts_value, found, plan=planner, not_checked=why)


def _print_explanation(opts: dict, ex, stream=None) -> None:
    from fixdnn.probes.explain import render_lines

    if opts.get("json"):
        _emit_json(ex.to_dict())
        return
    (stream or sys.stdout).write("\n".join(render_lines(ex)) + "\n")


@app.command("explain")
def explain_command(
    ctx: typer.Context,
    text: Optional[str] = typer.Argument(None, metavar="[TEXT]", help="The error message (or a whole log)."),
    log: Optional[str] = typer.Option(None, "--log", metavar="FILE", help="Read the message from FILE (a whole log is fine)."),
) -> None:
    """Explain an error message: what it means, which cause holds in this environment, and the fix."""
    opts = _options(ctx)
    if text is not None and log is not None:
        raise UsageError("give the message as TEXT or with --log FILE, not both")
    if log is not None:
        try:
            with open(log, "rb") as fh:
                data = fh.read(16 << 20)
        except OSError as exc:
            shown = log.replace("\n", "\\n")
            raise UsageError(f"--log {shown}: cannot read ({exc.strerror})") from None
        text = data.decode("utf-8", "replace")
    elif text is None:
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("no message: give TEXT, --log FILE, or pipe the log on stdin")
        text = sys.stdin.read(16 << 20)
    ex = _explanation(opts, text)
    _print_explanation(opts, ex)
    raise typer.Exit(ex.exit_code)


@app.command("verify")
def verify_command(
    ctx: typer.Context,
    loader_trace: bool = typer.Option(False, "--loader-trace",
                                      help="Rerun failing loads under LD_DEBUG=libs and show the search trace."),
    timeout: float = typer.Option(180.0, "--timeout", min=1.0, metavar="SECONDS", help="Time limit per probe, in seconds."),
) -> None:
    """Load cuDNN and import each framework in subprocesses of the target; run a tiny conv2d (exit 1 on an error)."""
    from fixdnn.probes.suite import verify

    opts = _options(ctx)
    if opts.get("facts_file") or opts.get("root"):
        raise UsageError("verify runs the target's interpreter; it cannot use --facts or --root")
    facts_value = _gather(opts)
    from fixdnn.cli.progress import status

    specs = _kernelspecs(opts, facts_value.target.prefix) if facts_value.target.prefix else ()
    with status(opts, "starting the probes") as shown:
        result = verify(facts_value, _host(opts), timeout=timeout, loader_trace=loader_trace, kernelspecs=specs,
                        on_probe=lambda what: shown.update(f"probing in a subprocess: {what}"))
    if opts.get("json"):
        _emit_json(result.to_dict())
        raise typer.Exit(result.exit_code)
    out = sys.stdout
    quiet, verbose = bool(opts.get("quiet")), bool(opts.get("verbose"))
    if not quiet:
        out.write(f"verify {result.python}\n")
        if facts_value.target.chosen_because:
            out.write(f"  (chosen because: {facts_value.target.chosen_because})\n")
        for line in result.passed:
            out.write(f"  ok    {line}\n")
    for f in sorted(result.findings, key=lambda f: {"error": 0, "warning": 1, "info": 2}[f.severity]):
        if quiet and f.severity == "info":
            continue
        out.write(f"  {f.severity:<5} {f.name}: {f.summary}\n")
        if f.output and f.severity != "info" and not quiet:
            # the probe's own output: its last lines, or all of it with -v
            lines = f.output.strip().splitlines()
            for line in lines if verbose else lines[-6:]:
                out.write(f"        | {line}\n")
    for soname, trace in result.traces.items():
        out.write(f"loader trace for {soname} (LD_DEBUG=libs):\n")
        for line in trace.splitlines():
            out.write(f"  {line}\n")
    if not result.passed and not result.findings and not quiet:
        out.write("  nothing to probe: no cuDNN copy and no framework found\n")
    if result.exit_code and not loader_trace and not quiet:
        out.write("fixdnn verify --loader-trace shows where the loader searched\n")
    raise typer.Exit(result.exit_code)


# Everything after the command's first word is the command's own (fixdnn run python --json: python's).
@app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                      "allow_interspersed_args": False})
def run_command_cli(ctx: typer.Context) -> None:
    """Run COMMAND with the environment's repairs applied (fixdnn run -- COMMAND ...); explain a failure."""
    from fixdnn.shell.envfile import EnvFileError
    from fixdnn.shell.run import activated_env, run_command

    opts = _options(ctx)
    argv = list(ctx.args)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        raise UsageError("no command: fixdnn run -- COMMAND [ARGS...]")
    host = _host(opts)
    prefix = _target_prefix(opts, required=False)
    try:
        env, _changes = activated_env(prefix, host.environ)
    except EnvFileError as exc:
        raise UsageError(str(exc)) from None
    sys.stdout.flush()
    err = sys.stderr.buffer if hasattr(sys.stderr, "buffer") else None

    def sink(chunk: bytes) -> None:
        if err is not None:
            err.write(chunk)
            err.flush()
        else:
            sys.stderr.write(chunk.decode("utf-8", "replace"))

    outcome = run_command(argv, env, sink=sink)
    if outcome.error:
        sys.stderr.write(f"fixdnn: {outcome.error}\n")
        raise typer.Exit(outcome.returncode)
    if outcome.returncode != 0:
        ex = _explanation({**opts, "json": False}, outcome.stderr_tail)
        if ex.items and not all(e.harmless for e in ex.items):
            from fixdnn.probes.explain import render_lines

            sys.stderr.write(f"\nfixdnn: the command failed (exit {outcome.returncode}); what its error means:\n")
            sys.stderr.write("\n".join("  " + ln if ln else "" for ln in render_lines(ex)) + "\n")
    raise typer.Exit(outcome.returncode)


_SHELLS_HELP = "bash, zsh or fish"


@app.command("hook")
def hook_command(shell: str = typer.Argument(..., metavar="SHELL", help=_SHELLS_HELP)) -> None:
    """Print shell code that keeps repairs alive in every shell: eval "$(fixdnn hook bash)" in ~/.bashrc."""
    from fixdnn.shell.hook import main as hook_main  # also served before typer loads (fixdnn.cli.main)

    raise typer.Exit(hook_main([shell]))


@app.command("completion")
def completion_command(shell: str = typer.Argument(..., metavar="SHELL", help=_SHELLS_HELP)) -> None:
    """Print the shell completion script: eval "$(fixdnn completion bash)" in ~/.bashrc."""
    from typer.completion import get_completion_script

    if shell not in ("bash", "zsh", "fish"):
        raise UsageError(f"completion: expected one of bash, zsh, fish, got {shell!r}")
    sys.stdout.write(get_completion_script(prog_name="fixdnn", complete_var=_COMPLETE_VAR, shell=shell) + "\n")


_COMPLETE_VAR = "_FIXDNN_COMPLETE"


# The options of the main callback that each command also accepts after its name, as pip, uv and ruff
# do (fixdnn verify --python PATH). Keys are click parameter names; _OBJ_KEY renames the odd one.
_TARGET = ("python", "prefix", "root")
_OUTPUT = ("json_out", "quiet", "verbose")
# -q / -v only where they change something: the diagnosis, verify; -q also silences progress.
_COMMAND_OPTIONS: dict[str, tuple[str, ...]] = {
    "facts": _TARGET + ("quiet", "verify_all", "lock"),
    "symptoms": ("json_out",),
    "lock": _TARGET + ("json_out", "quiet"),
    "env": _TARGET + ("json_out",),
    "apply": ("python", "prefix", "json_out", "quiet", "offline", "rules", "verify_all"),
    "rollback": ("python", "prefix", "json_out"),
    "history": ("python", "prefix", "json_out"),
    "explain": _TARGET + ("json_out", "quiet", "facts_file", "rules", "offline", "verify_all"),
    "verify": ("python", "prefix") + _OUTPUT + ("verify_all",),
    "run": ("python", "prefix"),
}
_OBJ_KEY = {"json_out": "json"}


def _accept_after(command, accepted: tuple[str, ...], shared: dict) -> None:
    """Give ``command`` copies of the shared options; a value given after the command name wins."""
    import copy

    have = {p.name for p in command.params}
    added = [copy.copy(shared[name]) for name in accepted if name in shared and name not in have]
    if not added:
        return
    command.params = list(command.params) + added
    names = {p.name for p in added}
    inner = command.callback
    for param in added:  # a parameter callback gets the context through click's public interface
        param.callback = _record_after(param.callback)

    def callback(*args, **kwargs):
        for name in names:
            kwargs.pop(name)
        return inner(*args, **kwargs)

    command.callback = callback


def _record_after(original):
    def record(ctx, param, value):
        if original is not None:
            value = original(ctx, param, value)
        source = ctx.get_parameter_source(param.name)
        if source is not None and source.name != "DEFAULT":  # given on the command line or by env
            obj = ctx.obj if isinstance(ctx.obj, dict) else {}
            key = _OBJ_KEY.get(param.name, param.name)
            obj[key] = list(obj.get(key) or ()) + list(value) if key in ("rules", "use", "skip") else value
            ctx.obj = obj
        return value

    return record


def _command():
    """The click group typer builds, with the shared options accepted after each command name too."""
    group = typer.main.get_command(app)
    shared = {p.name: p for p in group.params}
    for name, command in group.commands.items():
        _accept_after(command, _COMMAND_OPTIONS.get(name, ()), shared)
    return group


def _is_ours(exc: BaseException) -> bool:
    """A usage or target error of fixdnn's: one line, exit 2.

    Checked through ``sys.modules`` so that start-up does not import the rule tables or the target
    probe only to name their exception classes: a module never imported cannot have raised.
    """
    if isinstance(exc, UsageError):
        return True
    for module, name in (("fixdnn.knowledge.compat", "RulesError"), ("fixdnn.target.interpreter", "TargetError")):
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(exc, cls):
            return True
    return False


def run(argv: list[str]) -> int:
    """Run the app and turn every failure into one line and an exit code."""
    if os.environ.get(_COMPLETE_VAR):  # a completion request from the script of 'fixdnn completion'
        from typer.completion import completion_init

        completion_init()
    try:
        # Outside standalone mode click returns (not raises) the code of a typer.Exit.
        try:
            code = _command()(args=argv, prog_name="fixdnn", standalone_mode=False)
        except typer.Exit as exc:
            code = exc.exit_code
        sys.stdout.flush()  # here, not at exit: a reader that went away is then handled below
    except KeyboardInterrupt:
        sys.stderr.write("fixdnn: interrupted\n")
        return 130
    except BrokenPipeError:  # the reader went away (fixdnn | head): neither our failure nor "problems found"
        return _reader_went_away()
    except SystemExit:  # click ends a write into a closed pipe with exit 1 itself
        if _stdout_reader_gone():
            return _reader_went_away()
        raise
    except Exception as exc:  # click's own usage errors, and our bugs: one line, never a traceback
        if _is_ours(exc):
            sys.stderr.write(f"fixdnn: {one_line(str(exc))}\n")
            return 2
        # click's usage errors (typer vendors click privately): known by their interface, not their class
        if callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int):
            sys.stderr.write(f"fixdnn: {one_line(exc.format_message())}\n")
            return 2
        sys.stderr.write(f"fixdnn: internal error: {exc.__class__.__name__}: {one_line(str(exc))} "
                         "(please report it with 'fixdnn facts' output)\n")
        return 2
    return code if isinstance(code, int) else 0
