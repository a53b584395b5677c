"""The CLI as a user types it: options after the command, every command's help, python -m fixdnn,
completion, and the start-up fast paths. Real fixdnn processes, real target interpreters."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from tests.envkit.env import EnvBuilder

FIXDNN = [sys.executable, "-m", "fixdnn"]


def fixdnn(args, environ, **kw):
    return subprocess.run(FIXDNN + list(args), capture_output=True, text=True, env=environ, timeout=120, **kw)


def _commands(help_text: str) -> list[str]:
    block = help_text.split("Commands:", 1)[1]
    return [m.group(1) for m in re.finditer(r"^  (\w[\w-]*)\s", block, re.M)]


def test_help_lists_every_command_and_each_command_has_help(environ):
    top = fixdnn(["--help"], environ)
    assert top.returncode == 0, top.stderr
    commands = _commands(top.stdout)
    assert {"facts", "symptoms", "lock", "env", "apply", "rollback", "history", "explain", "verify", "run",
            "hook", "completion"} <= set(commands)
    for name in commands:
        proc = fixdnn([name, "--help"], environ)
        assert proc.returncode == 0, (name, proc.stderr)
        assert proc.stdout.startswith(f"Usage: fixdnn {name}"), (name, proc.stdout)
    # metavars say what an option takes, never a type name
    assert "<str>" not in top.stdout and "--python PATH" in top.stdout and "--lock FILE" in top.stdout


def test_options_after_the_command_mean_the_same_as_before(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    env.add_torch("2.13.0+cpu", cuda=None)
    before = fixdnn(["--prefix", str(env.prefix), "--json", "history"], environ)
    after = fixdnn(["history", "--prefix", str(env.prefix), "--json"], environ)
    assert before.returncode == after.returncode == 0, (before.stderr, after.stderr)
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert json.loads(after.stdout)["prefix"] == str(env.prefix)
    # --python after the command reaches the target discovery (a wrong path is the user's error)
    for command in ("verify", "apply", "rollback", "history", "env", "lock"):
        proc = fixdnn([command, "--python", str(tmp_path / "missing" / "python")] + (["-o", "x"] if command == "lock" else []), environ)
        assert proc.returncode == 2, (command, proc.stderr)
        assert proc.stderr.strip() == f"fixdnn: --python {tmp_path}/missing/python: no such file; " \
                                      "give the path of the target's interpreter", command


def test_a_value_after_the_command_wins_over_one_before(tmp_path, environ):
    one, two = EnvBuilder(tmp_path / "one", real_python=False), EnvBuilder(tmp_path / "two", real_python=False)
    proc = fixdnn(["--prefix", str(one.prefix), "env", "--prefix", str(two.prefix), "--json"], environ)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["prefix"] == str(two.prefix)


def test_run_leaves_options_after_its_command_to_that_command(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    proc = fixdnn(["run", "--python", str(env.python), "python", "-c", "import sys; print(sys.argv[1:])",
                   "--json", "--python", "x"], environ)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['--json', '--python', 'x']"


def test_python_dash_m_and_the_version_fast_path(environ):
    proc = fixdnn(["--version"], environ)
    assert proc.returncode == 0 and re.fullmatch(r"fixdnn \d+\.\d+\.\d+\S*\n", proc.stdout)
    # --version and hook answer before typer, rich or the rule tables are imported
    code = ("import sys, io; from fixdnn.cli import main; sys.stdout = io.StringIO(); main(['--version']); "
            "main(['hook', 'bash']); sys.stdout = sys.__stdout__; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'rich', 'click') "
            "or m.startswith('fixdnn.knowledge')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True)
    assert out.stdout.strip() == "[]"


def test_hook_help_and_a_wrong_shell(environ):
    proc = fixdnn(["hook", "--help"], environ)
    assert proc.returncode == 0 and "SHELL" in proc.stdout
    proc = fixdnn(["hook", "tcsh"], environ)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "bash, zsh, fish" in proc.stderr


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_completes_commands_and_options_after_them(tmp_path, environ):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "fixdnn").write_text(f"#!/bin/sh\nexec {sys.executable} -m fixdnn \"$@\"\n")
    (bindir / "fixdnn").chmod(0o755)
    script = fixdnn(["completion", "bash"], environ).stdout
    probe = (script + "\nCOMP_WORDS=(fixdnn ver); COMP_CWORD=1; _fixdnn_completion fixdnn; echo \"${COMPREPLY[*]}\"\n"
             "COMP_WORDS=(fixdnn verify --pyt); COMP_CWORD=2; _fixdnn_completion fixdnn; echo \"${COMPREPLY[*]}\"\n")
    out = subprocess.run(["bash", "--norc", "-c", probe], capture_output=True, text=True,
                         env={**environ, "PATH": f"{bindir}:{environ['PATH']}"}, timeout=60)
    assert out.stdout.splitlines() == ["verify", "--python"], out.stderr


# -- which environment, and why ------------------------------------------------------------------------
def test_project_venv_is_found_from_a_subfolder_as_uv_does(tmp_path, environ):
    project = tmp_path / "project"
    env = EnvBuilder(project / ".venv")
    env.add_torch("2.13.0+cpu", cuda=None)
    deep = project / "src" / "pkg"
    deep.mkdir(parents=True)
    proc = fixdnn(["--json"], environ, cwd=deep)
    assert proc.returncode == 0, proc.stderr
    target = json.loads(proc.stdout)["target"]
    assert target["prefix"] == str(project / ".venv") and target["kind"] == "venv"
    assert "project's virtual environment in a parent folder" in target["chosen_because"]
    text = fixdnn([], environ, cwd=project)
    assert "torch 2.13.0+cpu" in text.stdout
    assert "chosen because: no environment is active; the project's virtual environment in the current folder" \
        in text.stdout


def test_an_active_environment_wins_over_the_project_venv(tmp_path, environ):
    project = tmp_path / "project"
    EnvBuilder(project / ".venv")
    other = EnvBuilder(tmp_path / "active")
    proc = fixdnn(["--json"], {**environ, "VIRTUAL_ENV": str(other.prefix)}, cwd=project)
    target = json.loads(proc.stdout)["target"]
    assert target["prefix"] == str(other.prefix) and target["chosen_because"].startswith("VIRTUAL_ENV is set")
    proc = fixdnn(["--json", "--python", str(other.python)], environ, cwd=project)
    assert json.loads(proc.stdout)["target"]["chosen_because"] == f"--python {other.python}"


def test_a_dot_venv_that_is_not_a_venv_is_a_usage_error(tmp_path, environ):
    (tmp_path / "project" / ".venv").mkdir(parents=True)
    proc = fixdnn([], environ, cwd=tmp_path / "project")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"fixdnn: {tmp_path}/project/.venv: a .venv folder without pyvenv.cfg")


def test_run_resolves_the_command_in_the_target_environment_first(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv")
    code = "import sys, os; print(sys.prefix); print(os.environ['VIRTUAL_ENV'])"
    # PATH holds another python3/python, but the target's bin/ comes first (as conda run -p / uv run)
    proc = fixdnn(["--python", str(env.python), "run", "--", "python", "-c", code], environ, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(env.prefix), str(env.prefix)]
    # a project .venv serves run as it serves diagnosis
    project = tmp_path / "project"
    dot = EnvBuilder(project / ".venv")
    proc = fixdnn(["run", "python", "-c", "import sys; print(sys.prefix)"], environ, cwd=project)
    assert proc.stdout.strip() == str(dot.prefix), proc.stderr
    missing = fixdnn(["--python", str(env.python), "run", "--", "no-such-tool-xyz"], environ)
    assert missing.returncode == 127 and "no-such-tool-xyz: command not found" in missing.stderr
