"""The CLI as a user types it: options after the command, every command's help, python -m fixdnn,
completion, and the start-up fast paths. Real fixdnn processes, real target interpreters."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.envkit.cli import run_fixdnn
from tests.envkit.env import EnvBuilder

FIXDNN = [sys.executable, "-m", "fixdnn"]


def fixdnn(args, environ, **kw):
    return run_fixdnn(args, environ, **kw)


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
    # --version and hook answer before typer, rich, the rule tables, typing or hashlib are imported
    # (bench/startup.py measures what that is worth)
    code = ("import sys, io; from fixdnn.cli import main; sys.stdout = io.StringIO(); main(['--version']); "
            "main(['hook', 'bash']); sys.stdout = sys.__stdout__; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'rich', 'click', 'typing', "
            "'hashlib') or m.startswith('fixdnn.knowledge')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True)
    assert out.stdout.strip() == "[]"


def test_hook_help_and_a_wrong_shell(environ):
    proc = fixdnn(["hook", "--help"], environ)
    assert proc.returncode == 0 and "SHELL" in proc.stdout
    proc = fixdnn(["hook", "tcsh"], environ)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "bash, zsh, fish" in proc.stderr


def _fixdnn_on_path(tmp_path) -> Path:
    """A bin/ folder whose ``fixdnn`` runs this checkout's fixdnn, for shells that complete the command."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "fixdnn").write_text(f"#!/bin/sh\nexec {sys.executable} -m fixdnn \"$@\"\n")
    (bindir / "fixdnn").chmod(0o755)
    return bindir


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_completes_commands_and_options_after_them(tmp_path, environ):
    bindir = _fixdnn_on_path(tmp_path)
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


def test_relative_python_and_prefix_mean_the_users_folder(tmp_path, environ):
    """The probe runs from a private empty folder; `--python env/bin/python` is still the user's env."""
    env = EnvBuilder(tmp_path / "work" / "env")
    env.add_torch("2.13.0+cpu", cuda=None)
    for args in (["--python", "env/bin/python"], ["--prefix", "env"], ["--python", "./env/bin/../bin/python"]):
        proc = fixdnn(args + ["--json"], environ, cwd=tmp_path / "work")
        assert proc.returncode == 0, (args, proc.stderr)
        assert json.loads(proc.stdout)["target"]["prefix"] == str(env.prefix), args


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


# -- the human report: deciding steps, whole names, progress only at a terminal ------------------------
def _on_pty(args, environ, *, which: str, columns: int = 60):
    """Run fixdnn with stdout or stderr on a pseudo-terminal of ``columns`` columns; (stdout, stderr)."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, which: slave}
    proc = subprocess.Popen(FIXDNN + list(args), env={**environ, "COLUMNS": str(columns), "TERM": "xterm"},
                            stdout=streams["stdout"], stderr=streams["stderr"])
    os.close(slave)
    got = b""
    while True:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            got += chunk
        elif proc.poll() is not None:
            break
    piped = (proc.stderr if which == "stdout" else proc.stdout).read()
    proc.wait(timeout=120)
    os.close(master)
    text = got.decode("utf-8", "replace").replace("\r\n", "\n")
    return (text, piped.decode()) if which == "stdout" else (piped.decode(), text)


def _missing_cudnn(tmp_path):
    env = EnvBuilder(tmp_path / "a rather long folder name for the environment" / "venv").tensorflow_cuda12()
    import shutil as _shutil

    _shutil.rmtree(env.site / "nvidia" / "cudnn")
    return env


def test_report_shows_deciding_loader_steps_and_verbose_shows_all(tmp_path, environ):
    env = _missing_cudnn(tmp_path)
    short = fixdnn(["--python", str(env.python)], environ)
    full = fixdnn(["--python", str(env.python), "-v"], environ)
    assert short.returncode == full.returncode == 1
    assert "DT_RUNPATH[0]" not in short.stdout and "DT_RUNPATH[0]" in full.stdout
    assert re.search(r"\(\d+ more loader steps found nothing there; fixdnn -v shows each\)", short.stdout)
    assert "libcudnn.so.9: cannot open shared object file" in short.stdout
    data = json.loads(fixdnn(["--python", str(env.python), "--json"], environ).stdout)
    missing = next(s for s in data["symptoms"] if s["name"] == "cudnn-missing")
    assert any("DT_RUNPATH[0]" in line for line in missing["chain"])  # the full chain in JSON
    quiet = fixdnn(["--python", str(env.python), "-q"], environ)
    assert quiet.returncode == 1 and "FDN101 cudnn-missing" in quiet.stdout
    assert "chosen because" not in quiet.stdout and "info FDN" not in quiet.stdout


def test_no_path_is_broken_inside_a_name_in_a_pipe_or_a_60_column_terminal(tmp_path, environ):
    env = EnvBuilder(tmp_path / "a rather long folder name for the environment" / "venv").torch_cuda13()
    lib = str(env.site / "nvidia" / "cudnn" / "lib" / "libcudnn.so.9")
    piped = fixdnn(["--python", str(env.python)], {**environ, "COLUMNS": "60"})
    assert lib in piped.stdout  # whole, on one line
    term, _ = _on_pty(["--python", str(env.python)], environ, which="stdout")
    names = {n for line in piped.stdout.splitlines() for tok in line.split() for n in tok.split("/") if n}
    for line in term.splitlines():
        plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", line)
        assert len(plain) <= 60 or len(plain.split()) == 1, plain
        for tok in plain.split():
            for name in tok.split("/"):
                assert name == "" or name in names, (name, plain)
    assert "libcudnn.so.9" in term


def test_progress_is_shown_on_a_terminal_only(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv").tensorflow_cuda12()
    _, err = _on_pty(["verify", "--python", str(env.python)], environ, which="stderr")
    assert "reading the environment" in err and "probing in a subprocess: importing tensorflow" in err
    out, err = _on_pty(["verify", "--python", str(env.python), "--json"], environ, which="stderr")
    assert err == "" and json.loads(out)["schema"] == "fixdnn.verify/1"
    piped = fixdnn(["verify", "--python", str(env.python)], environ)
    assert piped.stderr == ""


def test_a_rules_folder_fixdnn_would_ignore_is_an_error(tmp_path, environ):
    rules = tmp_path / "my rules"
    rules.mkdir()
    (rules / "bad.toml").write_text("[[remedy]]\n")
    proc = fixdnn(["--rules", str(rules), "symptoms"], environ)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr == (f"fixdnn: --rules {rules}: nothing fixdnn recognises: found bad.toml; expected "
                           f"remedies/*.toml and/or errors.toml (move bad.toml to {rules}/remedies/bad.toml?)\n")
    later = fixdnn(["explain", "--rules", str(rules), "--json", "OMP: Error #15"], environ)
    assert later.returncode == 2 and "nothing fixdnn recognises" in later.stderr


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed")
def test_fish_completion(tmp_path, environ):
    bindir = _fixdnn_on_path(tmp_path)
    probe = 'fixdnn completion fish | source; complete -C "fixdnn ver"; complete -C "fixdnn history --js"'
    out = subprocess.run(["fish", "--no-config", "-c", probe], capture_output=True, text=True, timeout=60,
                         env={**environ, "PATH": f"{bindir}:{environ['PATH']}"})
    assert [line.split("\t")[0] for line in out.stdout.splitlines()] == ["verify", "--json"], out.stderr


def test_verify_quiet_and_verbose(tmp_path, environ):
    from tests.envkit import stubs

    env = stubs.torch_env(EnvBuilder(tmp_path / "venv"))
    (env.cudnn_lib / "libcudnn_graph.so.9").unlink()
    args = ["verify", "--python", str(env.python)]
    data = json.loads(fixdnn(args + ["--json"], environ).stdout)
    failed = [f for f in data["findings"] if f["severity"] == "error" and f["output"].strip()]
    assert failed, data
    quiet = fixdnn(args + ["-q"], environ)
    assert quiet.returncode == 1
    assert quiet.stdout.splitlines() == [f"  {f['severity']:<5} {f['name']}: {f['summary']}"
                                         for f in data["findings"] if f["severity"] != "info"]
    normal = fixdnn(args, environ).stdout
    verbose = fixdnn(args + ["-v"], environ).stdout
    for f in failed:
        lines = f["output"].strip().splitlines()
        assert all(f"        | {line}" in verbose for line in lines)
        assert sum(f"        | {line}" in normal for line in lines) == min(len(lines), 6)


@pytest.mark.parametrize("args", [[], ["--json"], ["symptoms"]], ids=["report", "json", "plain write"])
def test_a_reader_that_goes_away_is_exit_141_and_no_message(tmp_path, environ, args):
    """`fixdnn | head`: the pipe closes under fixdnn. Exit 1 would claim "problems found" and a traceback or
    "internal error" would be noise; a shell reports 141 (SIGPIPE) for such a writer, and so does fixdnn."""
    env = EnvBuilder(tmp_path / "venv").torch_cuda13()
    read, write = os.pipe()
    proc = subprocess.Popen([*FIXDNN, "--python", str(env.python), *args], stdout=write, stderr=subprocess.PIPE,
                            env=environ)
    os.close(write)
    os.close(read)  # the reader is gone before fixdnn writes its first line
    _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (141, b"")
