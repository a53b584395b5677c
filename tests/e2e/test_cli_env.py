"""`fixdnn env`: what fixdnn's activation scripts change in an environment, and why."""

import json
import venv

from fixdnn.shell.envfile import EnvFile, EnvOp
from fixdnn.shell.install import install
from tests.envkit.cli import run_fixdnn


def test_env_lists_operations_with_reasons(tmp_path, environ):
    prefix = tmp_path / "v ü"
    venv.EnvBuilder(with_pip=False).create(prefix)
    empty = run_fixdnn(["--prefix", str(prefix), "env"], environ, how="code")
    assert empty.returncode == 0 and "changes nothing" in empty.stdout
    install(prefix, EnvFile((EnvOp("path-remove", "LD_LIBRARY_PATH", "/opt/old cudnn/lib",
                                   reason="stale cuDNN 9.1 shadows the wheel", fixes="cudnn-shadowed"),
                             EnvOp("set", "MKL_THREADING_LAYER", "GNU", reason="torch loads libgomp"))))
    text = run_fixdnn(["--prefix", str(prefix), "env"], environ, how="code")
    assert text.returncode == 0, text.stderr
    assert "path-remove LD_LIBRARY_PATH /opt/old cudnn/lib  # stale cuDNN 9.1 shadows the wheel (fixes cudnn-shadowed)" in text.stdout
    out = run_fixdnn(["--prefix", str(prefix), "--json", "env"], environ, how="code")
    ops = json.loads(out.stdout)["operations"]
    assert [(o["op"], o["name"], o["value"]) for o in ops] == [
        ("path-remove", "LD_LIBRARY_PATH", "/opt/old cudnn/lib"), ("set", "MKL_THREADING_LAYER", "GNU")]


def test_env_with_a_broken_env_file_is_one_line(tmp_path, environ):
    prefix = tmp_path / "v"
    venv.EnvBuilder(with_pip=False).create(prefix)
    path = EnvFile.path_for(prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[[op]]\nop = 'path-prepend'\nname = 'LD_LIBRARY_PATH'\nvalue = 'relative/dir'\n")
    proc = run_fixdnn(["--prefix", str(prefix), "env"], environ, how="code")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_env_and_history_accept_python_instead_of_prefix(tmp_path, environ):
    """--python alone names the environment: its prefix comes from the interpreter itself."""
    prefix = tmp_path / "v"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(prefix)
    install(prefix, EnvFile((EnvOp("set", "TF_CPP_MIN_LOG_LEVEL", "0", reason="diagnosis"),)))
    environ["XDG_STATE_HOME"] = str(tmp_path / "state")
    python = str(prefix / "bin" / "python")
    shown = run_fixdnn(["--python", python, "env"], environ, how="code")
    assert shown.returncode == 0 and "set TF_CPP_MIN_LOG_LEVEL 0" in shown.stdout, shown.stderr
    history = run_fixdnn(["--python", python, "history"], environ, how="code")
    assert history.returncode == 0, history.stderr
