"""The package map in docs/explanation/packages.md stays true: every stage, in the order the import test
enforces, and every module it names exists."""

from __future__ import annotations

import re
from pathlib import Path

from tests.unit.test_layout import PACKAGE, STAGES

MAP = Path(__file__).resolve().parents[2] / "docs" / "explanation" / "packages.md"


def test_the_map_lists_every_stage_in_import_order_and_only_real_modules():
    text = MAP.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| `(\w+)/` \| [^|]+ \| (.+) \|$", text, re.M)
    assert [name for _n, name, _what in rows] == list(STAGES)
    for _n, stage, what in rows:
        for module in re.findall(r"`(\w+\.py)`", what):
            assert (PACKAGE / stage / module).exists(), f"{stage}/{module} named in the map does not exist"
