"""env.toml validation and round trip, the Python model, and renderer quoting against real shells."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixdnn.shell.envfile import EnvFile, EnvFileError, EnvOp, apply_ops
from fixdnn.shell.install import describe, install
from fixdnn.shell.render import render_fish, render_posix

from .conftest import ALL, NOISE, Shell, base_env, read_dump, require_shell

TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0"), max_size=40)
DIRS = st.builds(lambda s: "/" + s, st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\0:"),
                                               max_size=15))


def test_load_dump_round_trip(tmp_path):
    env = EnvFile((EnvOp("set", "A", 'q"\\\n\t\x01\x7f ü', reason="r\nnewline", fixes="x-y"),
                   EnvOp("unset", "B"), EnvOp("path-prepend", "LD_LIBRARY_PATH", "/a b")))
    path = tmp_path / "env.toml"
    env.dump(path)
    assert EnvFile.load(path) == env
    assert EnvFile.load(tmp_path / "missing.toml") == EnvFile()


@pytest.mark.parametrize(("body", "message"), [
    ('op = "path-prepend"\nname = "LD_LIBRARY_PATH"\nvalue = "lib"', "relative"),
    ('op = "path-prepend"\nname = "LD_LIBRARY_PATH"\nvalue = ""', "empty"),
    ('op = "path-remove"\nname = "P"\nvalue = "/a:/b"', "contains ':'"),
    ('op = "set"\nname = "A B"\nvalue = "x"', "invalid variable name"),
    ('op = "set"\nname = "_FIXDNN_STACK"\nvalue = "x"', "reserved"),
    ('op = "prepend"\nname = "P"\nvalue = "/x"', "unknown operation"),
    ('op = "unset"\nname = "P"\nvalue = "/x"', "takes no value"),
    ('op = "set"\nname = "P"', "value is required"),
    ('op = "set"\nname = "P"\nvalue = "x"\nextra = 1', "unknown keys"),
])
def test_bad_ops_are_refused_with_one_line(tmp_path, body, message):
    path = tmp_path / "env.toml"
    path.write_text(f"version = 1\n[[ops]]\n{body}\n")
    with pytest.raises(EnvFileError, match=re.escape(message)) as info:
        EnvFile.load(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_newline_in_relative_dir_still_gives_one_line():
    with pytest.raises(EnvFileError) as info:
        EnvOp("path-prepend", "P", "a\nb")
    assert "\n" not in str(info.value)


def test_apply_ops_model():
    env = {"P": "/a::/b:/a:", "E": "", "K": "keep"}
    ops = [EnvOp("path-prepend", "P", "/b"), EnvOp("path-remove", "Q", "/x"), EnvOp("set", "E", "v"),
           EnvOp("unset", "K"), EnvOp("path-remove", "R", "/r")]
    assert apply_ops(env, ops) == {"P": "/b:/a", "E": "v"}
    assert env == {"P": "/a::/b:/a:", "E": "", "K": "keep"}  # input untouched
    assert apply_ops({"P": "/x"}, [EnvOp("path-remove", "P", "/x")]) == {}  # never P=""


def test_describe(tmp_path):
    (tmp_path / "conda-meta").mkdir()
    install(tmp_path, EnvFile((EnvOp("set", "A", "1", reason="why", fixes="sym"),)))
    assert describe(tmp_path) == [{"op": "set", "name": "A", "value": "1", "reason": "why", "fixes": "sym",
                                   "source": str(tmp_path / "etc/fixdnn/env.toml")}]


@given(st.lists(st.tuples(TEXT, TEXT), max_size=5))
def test_toml_round_trip(pairs):
    env = EnvFile(tuple(EnvOp("set", f"V{i}", v, reason=r) for i, (v, r) in enumerate(pairs)))
    assert EnvFile.loads(env.dumps()) == env


def test_comments_cannot_break_out():
    op = EnvOp("set", "A", "1", reason="x\nunset HOME\r\u2028y", fixes="z\nq")
    for text in (render_posix([op], "k"), render_fish([op], "k")):
        assert "\nunset HOME" not in text and "\nq" not in text


# --- property: any value round-trips through each renderer and each real shell ---------------------

def _source_and_dump(shell: Shell, script: str, start: dict[str, str], tmp: Path) -> dict[str, str]:
    ext = "fish" if shell.fish else "sh"
    (tmp / f"r.{ext}").write_text(script, encoding="utf-8")
    body = 'source "$T/r.fish"\n' if shell.fish else '. "$T/r.sh"\n'
    (tmp / f"main.{ext}").write_text(body + 'env -0 > "$T/out"\n', encoding="utf-8")
    proc = subprocess.run(shell.argv(tmp / f"main.{ext}"), env=start, capture_output=True, timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    return read_dump((tmp / "out").read_bytes())


@pytest.fixture(scope="module")
def shells() -> list[Shell]:
    return [Shell(name, require_shell(name)) for name in ALL]


@pytest.mark.shell
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(TEXT, min_size=1, max_size=30), dirs=st.lists(DIRS, min_size=1, max_size=6),
       start=TEXT)
def test_values_round_trip_through_real_shells(shells, tmp_path_factory, values, dirs, start):
    """Many values per shell process: set each, then path ops over a hostile starting path list."""
    tmp = tmp_path_factory.mktemp("prop")
    ops = [EnvOp("set", f"V{i}", v) for i, v in enumerate(values)]
    ops += [EnvOp("path-prepend" if i % 3 else "path-remove", "LD_LIBRARY_PATH", d) for i, d in enumerate(dirs)]
    ops += [EnvOp("path-prepend", "SOME_LIST", d) for d in dirs]
    env0 = base_env(tmp, LD_LIBRARY_PATH=start, SOME_LIST=start)
    expected = apply_ops(env0, ops)
    for shell in shells:
        render = render_fish if shell.fish else render_posix
        got = _source_and_dump(shell, render(ops, "k0"), env0, tmp)
        got = {k: v for k, v in got.items() if not k.startswith("_FIXDNN")}
        want = {k: v for k, v in expected.items() if k not in NOISE}
        assert got == want, shell.name
