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


@pytest.mark.parametrize("name, old, new, pattern", [
    ("torch.toml", 'cuda = "13.0"', 'cuda = ', r"torch\.toml:\d+: invalid TOML"),
    ("tensorflow.toml", 'cudnn = "9.3"\n', 'cudnn = "nine"\n', r"tensorflow\.toml:\d+: cudnn = 'nine' is not a version"),
    ("torch.toml", 'cudnn_pin = "nvidia-cudnn-cu13==9.24.0.43"\n', "", r"torch\.toml:\d+: missing key 'cudnn_pin'"),
    ("driver.toml", 'cuda_major = 13', 'cuda_major = "13"', r"driver\.toml:\d+: cuda_major must be an int"),
])
def test_malformed_table_is_one_line_with_file_and_line(tables, name, old, new, pattern):
    path = tables / name
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(RulesError, match=pattern) as info:
        compat.load(tables)
    assert "\n" not in str(info.value)


def test_unreadable_table_is_one_line(tables):
    (tables / "jax.toml").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(RulesError, match=r"jax\.toml:1: not UTF-8 text"):
        compat.load(tables)
