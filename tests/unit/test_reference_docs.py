"""The reference pages are generated from the registry and rules/: the committed copy must be current."""

from pathlib import Path

import pytest

from fixdnn.cli.reference import PAGES
from fixdnn.symptoms.registry import load_all

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reference"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_generated_reference_is_current(name):
    committed = (DOCS / name).read_text(encoding="utf-8")
    assert committed == PAGES[name](), f"docs/reference/{name} is stale: run python -m fixdnn.cli.reference docs/reference"


def test_every_symptom_has_a_documented_meaning():
    page = PAGES["symptoms.md"]()
    for check in load_all().values():
        assert check.doc, f"{check.name} has no docstring"
        assert f"## {check.name}\n" in page and check.code in page


def test_codes_are_unique_and_well_formed():
    codes = [c.code for c in load_all().values()]
    assert len(codes) == len(set(codes))
    assert all(c.startswith("FDN") and c[3:].isdigit() and len(c) == 6 for c in codes)
