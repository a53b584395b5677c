"""`fixdnn env`: what fixdnn's activation scripts change in an environment, and why."""

import json
import subprocess
import sys
import venv

from fixdnn.shell.envfile import EnvFile, EnvOp
from fixdnn.shell.install import install

FIXDNN = [sys.executable, "-c", "import sys; from fixdnn.cli import main; sys.exit(main())"]


def test_env_lists_operations_with_reasons(tmp_path, environ):
    prefix = tmp_path / "v ü"
    venv.EnvBuilder(with_pip=False).create(prefix)
    empty = subprocess.run(FIXDNN + ["--prefix", str(prefix), "env"], capture_output=True, text=True, env=environ)
    assert empty.returncode == 0 and "changes nothing" in empty.stdout
    install(prefix, EnvFile((EnvOp("path-remove", "LD_LIBRARY_PATH", "/opt/old cudnn/lib",
                                   reason="stale cuDNN 9.1 shadows the wheel", fixes="cudnn-shadowed"),
                             EnvOp("set", "MKL_THREADING_LAYER", "GNU", reason="torch loads libgomp"))))
    text = subprocess.run(FIXDNN + ["--prefix", str(prefix), "env"], capture_output=True, text=True, env=environ)
    assert text.returncode == 0, text.stderr
    assert "path-remove LD_LIBRARY_PATH /opt/old cudnn/lib  # stale cuDNN 9.1 shadows the wheel (fixes cudnn-shadowed)" in text.stdout
    out = subprocess.run(FIXDNN + ["--prefix", str(prefix), "--json", "env"], capture_output=True, text=True, env=environ)
    ops = json.loads(out.stdout)["operations"]
    assert [(o["op"], o["name"], o["value"]) for o in ops] == [
        ("path-remove", "LD_LIBRARY_PATH", "/opt/old cudnn/lib"), ("set", "MKL_THREADING_LAYER", "GNU")]


def test_env_with_a_broken_env_file_is_one_line(tmp_path, environ):
    prefix = tmp_path / "v"
    venv.EnvBuilder(with_pip=False).create(prefix)
    path = EnvFile.path_for(prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[[op]]\nop = 'path-prepend'\nname = 'LD_LIBRARY_PATH'\nvalue = 'relative/dir'\n")
    proc = subprocess.run(FIXDNN + ["--prefix", str(prefix), "env"], capture_output=True, text=True, env=environ)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_env_and_history_accept_python_instead_of_prefix(tmp_path, environ):
    """--python alone names the environment: its prefix comes from the interpreter itself."""
    prefix = tmp_path / "v"
    venv.EnvBuilder(with_pip=False, symlinks=True).create(prefix)
    install(prefix, EnvFile((EnvOp("set", "TF_CPP_MIN_LOG_LEVEL", "0", reason="diagnosis"),)))
    environ["XDG_STATE_HOME"] = str(tmp_path / "state")
    python = str(prefix / "bin" / "python")
    shown = subprocess.run(FIXDNN + ["--python", python, "env"], capture_output=True, text=True, env=environ)
    assert shown.returncode == 0 and "set TF_CPP_MIN_LOG_LEVEL 0" in shown.stdout, shown.stderr
    history = subprocess.run(FIXDNN + ["--python", python, "history"], capture_output=True, text=True, env=environ)
    assert history.returncode == 0, history.stderr
