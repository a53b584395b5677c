"""rules/compat/: the tables load, answer lookups, and a malformed table is one line with file and line."""

from __future__ import annotations

import shutil

import pytest

from fixdnn.knowledge import compat
from fixdnn.knowledge.compat import RulesError


def test_shipped_tables_answer_the_known_pins():
    c = compat.load()
    tf = c.tf_build("2.20.0")
    assert (str(tf.cudnn), str(tf.cuda)) == ("9.3", "12.5")
    assert c.torch_wheel("2.14.1+cu130").cudnn_pin == "nvidia-cudnn-cu13==9.24.0.43"
    assert str(c.jax_minimum("0.7.2", 12).cudnn) == "9.8"
    assert c.driver_floor[13] == "580.65.06"
    assert c.wheel_for("cudart", 13) == "nvidia-cuda-runtime" and c.wheel_for("cudnn", 13) == "nvidia-cudnn-cu13"
    assert c.tf_build("1.15") is None and c.torch_wheel("not a version") is None


@pytest.fixture
def tables(tmp_path):
    folder = tmp_path / "compat"
    shutil.copytree(compat.rules_dir() / "compat", folder)
    return folder


def _replace_last(path, old: str, new: str) -> int:
    """Replace the LAST occurrence of ``old`` (not the first: a line taken from the first mention of a key
    would then still look right) and return the line it was on."""
    text = path.read_text()
    at = text.rindex(old)
    assert at != text.index(old), f"{old!r} occurs once in {path.name}: the test needs a later entry"
    path.write_text(text[:at] + new + text[at + len(old):])
    return text.count("\n", 0, at) + 1


def _header_above(path, line: int) -> int:
    lines = path.read_text().splitlines()
    return next(n for n in range(line, 0, -1) if lines[n - 1].lstrip().startswith("[["))


@pytest.mark.parametrize("name, old, new, message, at_header", [
    ("torch.toml", 'cuda = "13.0"', 'cuda = ', "invalid TOML", False),
    ("tensorflow.toml", 'cudnn = "9.3"\n', 'cudnn = "nine"\n', "cudnn = 'nine' is not a version", False),
    ("torch.toml", 'cudnn_pin = ', '# cudnn_pin = ', "missing key 'cudnn_pin'", True),
    ("driver.toml", 'cuda_major = ', 'cuda_major = "x"  # ', "cuda_major must be an int", False),
    ("jax.toml", 'cuda_major = ', 'cuda_major = "x"  # ', "cuda_major must be an int", False),
])
def test_malformed_table_names_the_line_of_the_bad_entry(tables, name, old, new, message, at_header):
    path = tables / name
    line = _replace_last(path, old, new)
    if at_header:  # a missing key has no line: the entry's own [[header]] is the place to look
        line = _header_above(path, line)
    with pytest.raises(RulesError) as info:
        compat.load(tables)
    assert str(info.value).startswith(f"{path}:{line}: {message}"), str(info.value)
    assert "\n" not in str(info.value)


def test_unreadable_table_is_one_line(tables):
    (tables / "jax.toml").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(RulesError, match=r"jax\.toml:1: not UTF-8 text"):
        compat.load(tables)
