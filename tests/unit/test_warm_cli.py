"""The warm start of tests/envkit/cli.py gives what a fresh interpreter gives: the tests that use it would
otherwise pass for a process no user ever starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from tests.envkit import cli

SHOW = ("import json, os, sys; print(json.dumps({'argv': sys.argv, 'path0': sys.path[0], 'cwd': os.getcwd(), "
        "'env': dict(os.environ), 'stdin': sys.stdin.read(), 'pid': os.getpid(), 'exe': sys.executable, "
        "'encoding': sys.stdout.encoding}))")


@pytest.fixture(autouse=True)
def warm(monkeypatch):
    monkeypatch.delenv(cli.REAL_VAR, raising=False)  # these tests are about the warm start, whatever the run
    monkeypatch.setattr(cli, "SERVER_AT_CALL", 1)  # and the first call of each is warm


@pytest.fixture
def servers(monkeypatch):
    """Servers of this test's own: what the first call of the test started them with is known."""
    mine: dict = {}
    monkeypatch.setattr(cli, "_servers", mine)
    monkeypatch.setattr(cli, "_calls", cli.collections.Counter())
    yield mine
    while mine:
        mine.popitem()[1].close()


@pytest.fixture
def real(monkeypatch):
    def start(fn, *args, **kw):
        with monkeypatch.context() as m:
            m.setenv(cli.REAL_VAR, "1")
            return fn(*args, **kw)
    return start


def _both(real, fn, *args, **kw):
    warm = fn(*args, **kw)
    return warm, real(fn, *args, **kw)


def test_a_python_snippet_sees_only_what_the_call_gives(tmp_path, environ, real, servers):
    folder = tmp_path / "a 'folder' ü"
    folder.mkdir()
    assert cli.run_python("print(1)", [], {**environ, "EARLIER": "the call that started the server"}).stdout == "1\n"
    assert len(servers) == 1
    env = {**environ, "ODD": "a b $x\tc"}
    warm, cold = _both(real, cli.run_python, SHOW, ["one", "two words"], env, cwd=folder)
    assert warm.returncode == cold.returncode == 0, warm.stderr + cold.stderr
    w, c = json.loads(warm.stdout), json.loads(cold.stdout)
    assert w["pid"] != os.getpid() and w["pid"] != c["pid"]
    for key in ("argv", "path0", "cwd", "stdin", "exe", "encoding"):
        assert w[key] == c[key], key
    # the interpreter adds LC_CTYPE when it coerces the C locale; nothing of the server or of pytest leaks
    assert {k: v for k, v in w["env"].items() if k != "LC_CTYPE"} == env


@pytest.mark.parametrize("how", ["module", "isolated", "script", "code"])
def test_each_way_of_starting_fixdnn_gives_the_same_output_and_exit(how, tmp_path, environ, real):
    for args in (["--version"], ["--no-such-option"], ["explain", "all is well"]):
        warm, cold = _both(real, cli.run_fixdnn, args, environ, cwd=tmp_path, how=how)
        assert (warm.returncode, warm.stdout, warm.stderr) == (cold.returncode, cold.stdout, cold.stderr), args


def test_standard_input_exit_codes_and_signals(tmp_path, environ, real):
    text = "OMP: Error #15: Initializing libiomp5.so, but found libiomp5.so already initialized.\n"
    warm, cold = _both(real, cli.run_fixdnn, ["explain"], environ, input=text)
    assert warm.returncode == cold.returncode and "E36 (line 1)" in warm.stdout and warm.stdout == cold.stdout
    for code, expect in (("import sys; sys.exit(3)", 3), ("raise SystemExit('bye')", 1),
                         ("import os; os.kill(os.getpid(), 9)", -signal.SIGKILL), ("1/0", 1)):
        warm, cold = _both(real, cli.run_python, code, [], environ)
        assert warm.returncode == cold.returncode == expect, (code, warm.stderr)
        assert warm.stderr.splitlines()[-1:] == cold.stderr.splitlines()[-1:], code


def test_a_call_past_its_timeout_is_killed(environ):
    with pytest.raises(subprocess.TimeoutExpired):
        cli.run_python("import time; print('started', flush=True); time.sleep(60)", [], environ, timeout=1)
    assert cli.run_python("print('next')", [], environ).stdout == "next\n"  # the server goes on


def test_loader_variables_and_the_switch_start_a_real_interpreter(environ, monkeypatch, servers):
    """LD_* is read by the dynamic loader when the interpreter starts, which a fork never repeats."""
    assert cli._server_for({**environ, "LD_LIBRARY_PATH": "/x"}) is None
    assert cli._server_for(environ) is not None
    monkeypatch.setenv(cli.REAL_VAR, "1")
    assert cli._server_for(environ) is None


def test_interpreter_start_up_variables_get_a_server_of_their_own(environ, servers):
    plain = cli._server_for(environ)
    other = cli._server_for({**environ, "PYTHONPATH": "/somewhere"})
    assert plain is cli._server_for(dict(environ)) and other is not None and other is not plain
    shown = json.loads(cli.run_python(SHOW, [], {**environ, "PYTHONPATH": "/somewhere"}).stdout)
    assert "/somewhere" in json.loads(cli.run_python("import sys, json; print(json.dumps(sys.path))", [],
                                                     {**environ, "PYTHONPATH": "/somewhere"}).stdout)
    assert shown["env"]["PYTHONPATH"] == "/somewhere"


def test_a_server_is_started_at_the_second_call_of_its_start_up_values(environ, servers, monkeypatch):
    """A set of values one test uses once (a PYTHONPATH into its tmp_path) never costs a server."""
    monkeypatch.setattr(cli, "SERVER_AT_CALL", 2)
    once = {**environ, "PYTHONPATH": "/used once"}
    assert cli._server_for(once) is None and not servers  # the first call: a real start
    assert cli._server_for(once) is not None and len(servers) == 1
