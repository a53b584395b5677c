"""The target probe prints its answer as JSON without importing json (a third of its start-up): what it
writes must be what json.dumps writes, for every value it can meet (paths from os.fsdecode included)."""

from __future__ import annotations

import ast
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from fixdnn.target.interpreter import _probe_source as probe_source


def _probe_json():
    """The probe's own ``_json``, without running the probe (its last statement calls main())."""
    tree = ast.parse(probe_source())
    tree.body = [node for node in tree.body
                 if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
                         and getattr(node.value.func, "id", "") == "main")]
    names: dict = {}
    exec(compile(tree, "_probe.py", "exec"), names)
    return names["_json"]


WRITE = _probe_json()
TEXT = st.text(st.characters(codec=None, exclude_categories=()))  # surrogates, astral, controls, quotes
VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                      | TEXT, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                      max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(VALUES)
def test_the_probe_writes_what_json_dumps_writes(value):
    assert WRITE(value) == json.dumps(value)


def test_paths_that_are_not_utf8_and_odd_characters():
    for text in ("/tmp/a\udcff b", "q\"uote\\back", "tab\there\nnl\x00\x1f\x7f", "é ü 😀 \U0010ffff", "\b\f\r"):
        value = {"path": text, "list": [text, None, True, 1.5]}
        assert WRITE(value) == json.dumps(value)
    assert json.loads(WRITE({"p": "/tmp/a\udcff"})) == {"p": "/tmp/a\udcff"}
