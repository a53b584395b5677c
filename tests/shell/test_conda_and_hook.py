"""conda activate.d/deactivate.d under stacked activation, and the prompt hook, in real shells."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fixdnn.shell.envfile import EnvFile, EnvOp, apply_ops
from fixdnn.shell.hook import main as hook_main
from fixdnn.shell.hook import snippet
from fixdnn.shell.install import install, kind

from .conftest import FULL_HOSTILE, Run, Shell, base_env, make_venv, require_shell

pytestmark = pytest.mark.shell

OPS_1 = (EnvOp("path-prepend", "LD_LIBRARY_PATH", "/c1/lib"), EnvOp("set", "EMPTY_ONE", "c1 'x' $y"))
OPS_2 = (EnvOp("path-prepend", "LD_LIBRARY_PATH", "/c2/lib"), EnvOp("set", "EMPTY_ONE", "c2"),
         EnvOp("set", "ONLY_TWO", "2"))


def _conda_prefix(parent: Path, name: str, ops: tuple[EnvOp, ...]) -> Path:
    prefix = parent / name
    (prefix / "conda-meta").mkdir(parents=True)
    assert kind(prefix) == "conda"
    install(prefix, EnvFile(ops))
    return prefix


def _conda_step(shell: Shell, which: str, var: str | None) -> str:
    """What conda does: set CONDA_PREFIX, then source <prefix>/etc/conda/<which>.d/* for this shell."""
    ext = "fish" if shell.fish else "sh"
    lines = [shell.export("CONDA_PREFIX", f'"${var}"')] if var else []
    lines.append(shell.source(f'"$CONDA_PREFIX/etc/conda/{which}.d/fixdnn.{ext}"'))
    return "\n".join(lines)


@pytest.fixture(scope="module")
def condas(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    parent = tmp_path_factory.mktemp("condas")
    return _conda_prefix(parent, FULL_HOSTILE + " 1", OPS_1), _conda_prefix(parent, FULL_HOSTILE + " 2", OPS_2)


def test_conda_stacked_activation_restores_each_level(shell, tmp_path, condas):
    env = base_env(tmp_path, A=str(condas[0]), B=str(condas[1]))
    run = Run(shell, tmp_path).dump()
    run.add(_conda_step(shell, "activate", "A")).dump()
    run.add(_conda_step(shell, "activate", "B")).dump()  # conda activate --stack
    run.add(_conda_step(shell, "deactivate", None), shell.export("CONDA_PREFIX", '"$A"')).dump()
    run.add(_conda_step(shell, "deactivate", None), shell.unset("CONDA_PREFIX")).dump()
    d0, d1, d2, d3, d4 = run.go(env)
    assert d1 == {**apply_ops(d0, OPS_1), "CONDA_PREFIX": str(condas[0])} | _state(d1), run.stderr
    assert {k: d2[k] for k in ("LD_LIBRARY_PATH", "EMPTY_ONE", "ONLY_TWO")} == {
        k: apply_ops(apply_ops(d0, OPS_1), OPS_2)[k] for k in ("LD_LIBRARY_PATH", "EMPTY_ONE", "ONLY_TWO")}
    assert len(d2["_FIXDNN_STACK"].split()) == 2
    assert d3 == d1, run.stderr
    assert d4 == d0, run.stderr


def _state(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("_FIXDNN")}


# --- the hook ---------------------------------------------------------------------------------------


def _prompt(shell: Shell) -> str:
    """Run the prompt hooks. bash/zsh run them for real (interactive, commands on stdin); fish emits."""
    return "emit fish_prompt" if shell.fish else ":"


def _hook_lines(shell: Shell) -> list[str]:
    if shell.name == "bash":
        return ['PROMPT_COMMAND=\'echo "pc:$?" >> "$T/pc"\'', 'eval "$(fixdnn hook bash)"', 'eval "$(fixdnn hook bash)"']
    if shell.name == "zsh":
        return ['precmd_mine() { echo "pc:$?" >> "$T/pc"; }', "precmd_functions=(precmd_mine)",
                'eval "$(fixdnn hook zsh)"', 'eval "$(fixdnn hook zsh)"']
    return ['function mine --on-event fish_prompt; echo "pc:$status" >> "$T/pc"; end',
            "fixdnn hook fish | source", "fixdnn hook fish | source"]


@pytest.fixture
def hook_shell(request: pytest.FixtureRequest) -> Shell:
    return Shell(request.param, require_shell(request.param))


@pytest.fixture(scope="module")
def fixdnn_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``fixdnn`` on PATH that runs this checkout (the console script may not be installed)."""
    bindir = tmp_path_factory.mktemp("bin")
    exe = bindir / "fixdnn"
    root = Path(__file__).resolve().parents[2]
    exe.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(root)!r})\n"
                   "from fixdnn.cli import main\nsys.exit(main())\n")
    exe.chmod(0o755)
    return bindir


@pytest.mark.parametrize("hook_shell", ["bash", "zsh", "fish"], indirect=True)
def test_hook_switches_between_environments(hook_shell, tmp_path, condas, fixdnn_bin):
    """Two environments whose activation scripts did not run (VIRTUAL_ENV set by a tool, say)."""
    sh = hook_shell
    env = base_env(tmp_path, A=str(condas[0]), B=str(condas[1]))
    env["PATH"] = f"{fixdnn_bin}:{env['PATH']}"
    run = Run(sh, tmp_path).add(*_hook_lines(sh), _prompt(sh)).dump()
    run.add(sh.export("VIRTUAL_ENV", '"$A"'), "cd /", _prompt(sh)).dump()
    run.add(sh.export("VIRTUAL_ENV", '"$B"'), 'cd "$T"', _prompt(sh)).dump()
    if sh.fish:  # fish keeps $status around event handlers itself; the handler also returns it
        run.add("false", "_fixdnn_hook", 'echo "rc:$status" >> "$T/pc"')
    else:  # the prompt (hook, then the chained handler) runs between these two lines
        run.add("false", 'echo "rc:$?" >> "$T/pc"')
    run.add(sh.unset("VIRTUAL_ENV"), _prompt(sh)).dump()
    if sh.name == "bash":
        run.add('declare -p PROMPT_COMMAND > "$T/pcdecl"')
    elif sh.name == "zsh":
        run.add('print -r -- "$precmd_functions" > "$T/pcdecl"')
    else:
        run.add('functions --handlers-type generic | string match -e fish_prompt > "$T/pcdecl"')
    d0, da, db, dout = run.go(env, stdin=sh.name != "fish")
    assert {k: da.get(k) for k in ("LD_LIBRARY_PATH", "EMPTY_ONE")} == {
        k: apply_ops(d0, OPS_1).get(k) for k in ("LD_LIBRARY_PATH", "EMPTY_ONE")}, run.stderr
    assert {k: db.get(k) for k in ("LD_LIBRARY_PATH", "EMPTY_ONE", "ONLY_TWO")} == {
        k: apply_ops(d0, OPS_2).get(k) for k in ("LD_LIBRARY_PATH", "EMPTY_ONE", "ONLY_TWO")}, run.stderr
    assert dout == d0, run.stderr
    pc = (tmp_path / "pc").read_text()
    assert "rc:1" in pc, pc  # $? kept for the user
    assert "pc:1" in pc or sh.fish, pc  # ... and for the handler chained after the hook
    assert (tmp_path / "pcdecl").read_text().count("_fixdnn_hook") == 1


@pytest.mark.parametrize("hook_shell", ["bash", "zsh", "fish"], indirect=True)
def test_hook_does_not_double_apply_after_venv_block(hook_shell, tmp_path, fixdnn_bin):
    sh = hook_shell
    venv = make_venv(tmp_path, "v")
    install(venv, EnvFile(OPS_2))
    env = base_env(tmp_path, A=str(venv))
    env["PATH"] = f"{fixdnn_bin}:{env['PATH']}"
    run = Run(sh, tmp_path).add(*_hook_lines(sh), _prompt(sh)).dump()
    run.add(sh.activate("A"), _prompt(sh)).dump()
    run.add("deactivate", _prompt(sh)).dump()
    d0, d1, d2 = run.go(env, stdin=sh.name != "fish")
    assert len(d1["_FIXDNN_STACK"].split()) == 1, run.stderr
    assert d1["LD_LIBRARY_PATH"] == apply_ops(d0, OPS_2)["LD_LIBRARY_PATH"]
    assert d2 == d0, run.stderr


def test_hook_cli_errors_and_imports_nothing_heavy(capsys):
    assert hook_main(["tcsh"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bash, zsh, fish" in err
    assert hook_main([]) == 2
    code = ("import sys; from fixdnn.cli import main; main(['hook', 'bash']); "
            "heavy = [m for m in sys.modules if m.split('.')[0] in ('rich', 'requests', 'typer', 'click') "
            "or m.startswith(('fixdnn.knowledge.rules', 'fixdnn.symptoms', 'fixdnn.facts', 'fixdnn.cli.app'))]; "
            "sys.stderr.write(repr(heavy))")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
    assert proc.stderr == "[]"
    assert proc.stdout == snippet("bash")


def test_missing_shell_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="required when CI is set"):
        require_shell("no-such-shell-fixdnn")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_shell("no-such-shell-fixdnn")
