"""One reader per file format: dist-info/egg-info metadata and file lists, conda-meta records.

Every place that reads these formats goes through facts/distinfo.py or facts/condameta.py; the last test
searches the package for a second reader."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fixdnn.facts import condameta, distinfo
from fixdnn.repair.apply import dist_files, installed
from fixdnn.target.host import Host, HostError

PACKAGE = Path(__file__).resolve().parents[2] / "fixdnn"


def test_headers_split_by_lines_with_folded_fields_and_no_body():
    text = ("Metadata-Version: 2.1\nName: Torch_Thing\nVersion: 2.1\nRequires-Dist: a>=1\nRequires-Dist: b; "
            "extra == 'x'\nSummary: one\n  two\n\nName: not-a-header\n")
    headers = distinfo.parse_headers(text)
    assert headers["name"] == ["Torch_Thing"]
    assert headers["requires-dist"] == ["a>=1", "b; extra == 'x'"]
    assert headers["summary"] == ["one two"]
    assert "not-a-header" not in str(headers)  # the body after the blank line is never read as headers


def test_metadata_names_are_canonical_and_a_missing_version_is_an_error(tmp_path):
    d = tmp_path / "Foo.Bar-1.0.dist-info"
    d.mkdir()
    (d / "METADATA").write_text("Name: Foo.Bar__baz\nVersion: 1.0\n")
    meta = distinfo.read_metadata(Host(), str(d))
    assert (meta.name, meta.canonical, meta.version) == ("Foo.Bar__baz", "foo-bar-baz", "1.0")
    (d / "METADATA").write_text("Name: x\n\nVersion: 1.0\n")  # the version is in the body: not a header
    with pytest.raises(distinfo.DistInfoError, match="no Name or Version"):
        distinfo.read_metadata(Host(), str(d))


def test_record_rows_and_limit(tmp_path):
    rows = list(distinfo.record_rows('a/b.py,sha256=x,3\n\n"we,ird.py",sha256=y,4\nbad\n'))
    assert rows[0] == (1, ["a/b.py", "sha256=x", "3"], "")
    assert rows[1] == (3, ["we,ird.py", "sha256=y", "4"], "")
    assert rows[2][0] == 4 and rows[2][1] is None and "3 fields" in rows[2][2]
    rec = tmp_path / "RECORD"
    rec.write_bytes(b"x" * 2000)
    assert len(distinfo.read_record(Host(), str(rec), limit=4096)) == 2000
    with pytest.raises(distinfo.DistInfoError, match="larger than"):
        distinfo.read_record(Host(), str(rec), limit=1000)


def _egg(site: Path) -> Path:
    egg = site / "legacy_pkg-0.1-py3.11.egg-info"
    egg.mkdir(parents=True)
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: Legacy.Pkg\nVersion: 0.1\n")
    (site / "legacy_pkg").mkdir()
    (site / "legacy_pkg" / "__init__.py").write_text("")
    (egg / "installed-files.txt").write_text("../legacy_pkg/__init__.py\nPKG-INFO\n")
    return egg


def test_repair_sees_egg_info_distributions_and_their_files(tmp_path):
    site = tmp_path / "lib" / "python3.11" / "site-packages"
    egg = _egg(site)
    dist = site / "other-2.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Name: Other\nVersion: 2.0\n")
    (dist / "RECORD").write_text("other.py,,\nother-2.0.dist-info/METADATA,,\n../../../etc/outside,,\n")
    (site / "other.py").write_text("")
    found = installed((str(site),))
    assert found == {"legacy-pkg": [egg], "other": [dist]}
    files = dist_files(egg, str(tmp_path))
    assert str(site / "legacy_pkg" / "__init__.py") in files and str(egg / "PKG-INFO") in files
    files = dist_files(dist, str(site))  # the prefix bounds what a RECORD may name
    assert str(site / "other.py") in files and not any("outside" in f for f in files)


def _conda(prefix: Path, fname: str, data) -> None:
    (prefix / "conda-meta").mkdir(parents=True, exist_ok=True)
    (prefix / "conda-meta" / fname).write_text(data if isinstance(data, str) else json.dumps(data))


def test_conda_records_filter_by_file_name_before_parsing(tmp_path):
    _conda(tmp_path, "numpy-1.26.4-py311_0.json", {"name": "numpy", "version": "1.26.4", "files": ["a"],
                                                   "paths_data": {"paths": [{"_path": "a"}]}})
    _conda(tmp_path, "broken-1-0.json", "{not json")
    _conda(tmp_path, "list-1-0.json", "[]")
    _conda(tmp_path, "notes.txt", "x")
    got = list(condameta.records(Host(), str(tmp_path)))
    assert [type(r).__name__ for r in got] == ["RecordError", "RecordError", "Record"]
    assert "not JSON" in got[0].reason and got[1].reason == "not a JSON object"
    rec = got[2]
    assert (rec.name, rec.version, rec.build, rec.files, rec.paths) == ("numpy", "1.26.4", "py311_0", ["a"],
                                                                        [{"_path": "a"}])
    only = list(condameta.records(Host(), str(tmp_path), lambda name: name == "numpy"))
    assert [r.name for r in only] == ["numpy"]
    with pytest.raises(HostError):
        list(condameta.records(Host(), str(tmp_path / "nowhere")))


def test_no_second_reader_of_metadata_record_or_conda_meta():
    """Only the two reader modules open METADATA / RECORD / conda-meta files or normalise names by hand."""
    readers = {"distinfo.py", "condameta.py"}
    pattern = re.compile(r"""["'/](METADATA|RECORD|PKG-INFO|installed-files\.txt)["']\s*\)|"""
                         r"""conda-meta/\{|re\.sub\(r?["']\[-_\.\]\+""")
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name in readers:
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line) or ("json.loads" in line and "conda-meta" in line):
                found.append(f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}")
    assert found == []
