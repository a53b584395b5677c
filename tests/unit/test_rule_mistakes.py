"""Every kind of mistake in a user's rule file is one line: FILE:LINE: key: expected X, got Y (never a
TypeError or a RecursionError from deep inside)."""

from __future__ import annotations

import pytest

from fixdnn.knowledge.compat import RulesError
from fixdnn.symptoms.registry import load_rules


@pytest.mark.parametrize("body, where", [
    ("remedy = [1, 2]\n", ":1: remedy #1: expected a table ([[remedy]]), got an integer"),
    ('[[remedy]]\nid = "x.y"\nsymptom = ["x"]\nreason = "r"\nactions = []\n', ":3: symptom: expected a string, got an array"),
    ('[[remedy]]\nid = "x.y"\nsymptom = "cudnn-missing"\nreason = "r"\nwhen = 5\nactions = []\n',
     ":5: when: expected a table, got an integer"),
    ('[[remedy]]\nid = "x.y"\nsymptom = "cudnn-missing"\nreason = 3\nactions = []\n', ":4: reason: expected a string, got an integer"),
    ('[[remedy]]\nid = "x.y"\nsymptom = "cudnn-missing"\nreason = "r"\nactions = {}\n', ":5: actions: expected an array, got a table"),
    ("a = " + "[" * 20000 + "]" * 20000 + "\n", ":1: invalid TOML: nested too deeply"),
])
def test_each_mistake_is_one_line_with_file_and_line(tmp_path, body, where):
    (tmp_path / "remedies").mkdir()
    path = tmp_path / "remedies" / "mine.toml"
    path.write_text(body)
    with pytest.raises(RulesError) as err:
        load_rules([tmp_path], include_user=False)
    assert str(err.value) == f"{path}{where}"
