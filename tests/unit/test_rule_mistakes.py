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


def test_a_user_regex_that_backtracks_costs_its_time_limit_and_one_line(tmp_path, monkeypatch, capsys):
    """The regex runs in a child that is killed at the limit (five seconds in use; a quarter second here, so
    the test does not burn five seconds of CPU proving the same thing)."""
    import time

    from fixdnn.cli import main
    from fixdnn.probes import explain

    (tmp_path / "errors.toml").write_text(
        '[[error]]\nid = "U01"\nframeworks = ["torch"]\nregex = \'^(a+)+$\'\nsymptoms = ["cudnn-missing"]\n'
        'cause = "c"\nfix = "f"\nexamples = [\'aaaa\']\n')
    monkeypatch.setattr(explain, "REGEX_SECONDS", 0.25)
    monkeypatch.setenv("HOME", str(tmp_path))
    start = time.monotonic()
    code = main(["--rules", str(tmp_path), "explain", "a" * 40 + "b"])
    assert time.monotonic() - start < 30
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "U01" in err and "backtracks" in err and "0.25 s" in err


def test_a_rule_file_is_parsed_once_per_process_until_it_changes(tmp_path, monkeypatch):
    """Planning, explain and the checks of one process share each file's parse; an edited file (or the same
    mistake again) is read again."""
    from fixdnn.knowledge import rules as rules_mod

    reads = []
    real = rules_mod.load_toml
    monkeypatch.setattr(rules_mod, "load_toml", lambda path: reads.append(path.name) or real(path))
    (tmp_path / "remedies").mkdir()
    mine = tmp_path / "remedies" / "mine.toml"
    body = ('[[remedy]]\nid = "mine.{n}"\nsymptom = "kmp-duplicate-lib-ok"\nreason = "r"\n'
            'actions = [{{ kind = "manual", text = "t" }}]\n[[remedy.case]]\nevidence = {{}}\n'
            'expect = [{{ kind = "manual" }}]\n')
    mine.write_text(body.format(n="one"))

    def ids():
        return [r.id for r in load_rules([tmp_path], include_user=False).remedies if r.id.startswith("mine.")]

    assert ids() == ["mine.one"] and "mine.toml" in reads
    reads.clear()
    assert ids() == ["mine.one"] and reads == []  # nothing parsed again, the shipped files included
    mine.write_text(body.format(n="three"))
    assert ids() == ["mine.three"] and reads == ["mine.toml"]
    mine.write_text("remedy = 1\n")
    for _ in range(2):
        with pytest.raises(RulesError, match=r"mine.toml:1: 'remedy' must be an array"):
            load_rules([tmp_path], include_user=False)
