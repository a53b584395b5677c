"""The per-file answer cache: kept across metadata-only changes, dropped when content can have changed."""

from __future__ import annotations

import os

from fixdnn.base import filecache
from fixdnn.base.filecache import FileCache, identity
from fixdnn.facts import elfsyms, links
from fixdnn.target.host import Host
from tests.envkit.symver import provider, requester


def test_identity_ignores_chmod_and_hard_links_but_not_a_rewrite(tmp_path):
    f = tmp_path / "lib.so"
    f.write_bytes(b"x" * 10)
    before = identity(os.stat(f))
    os.chmod(f, 0o600)
    os.link(f, tmp_path / "other.so")
    assert identity(os.stat(f)) == before
    f.write_bytes(b"y" * 11)
    assert identity(os.stat(f)) != before


def test_answers_survive_a_new_process_and_damage_is_a_miss(tmp_path):
    path = tmp_path / "state" / "c.json"
    c = FileCache(path, "test/1")
    c.put("k", [1, 2], {"a": 1})
    c.save()
    filecache._MEMO.clear()
    assert FileCache(path, "test/1").get("k", [1, 2]) == {"a": 1}
    assert FileCache(path, "test/1").get("k", [1, 3]) is None
    assert FileCache(path, "other/1").get("k", [1, 2]) is None
    path.write_bytes(b"{\"schema\": \"test/1\", \"entries\": [")
    filecache._MEMO.clear()
    assert FileCache(path, "test/1").get("k", [1, 2]) is None


def test_a_binding_is_checked_once_per_file_identity(tmp_path, monkeypatch):
    soname = "libnvJitLink.so.12"
    built = provider(tmp_path / "build" / soname, soname, {soname: ["a", "b"]})
    req = requester(tmp_path / "lib/libcusparse.so.12", "libcusparse.so.12", ["a", "b"], built)
    prov = provider(tmp_path / "lib" / soname, soname, {soname: ["a"]})
    calls = []
    real = elfsyms.version_needs
    monkeypatch.setattr(elfsyms, "version_needs", lambda *a: calls.append(a) or real(*a))
    cache = FileCache(tmp_path / "links.json", links.CACHE_SCHEMA)
    first = links.cached_binding(Host(), str(req), soname, str(prov), cache)
    os.chmod(req, 0o700)  # metadata only
    again = links.cached_binding(Host(), str(req), soname, str(prov), cache)
    assert first == again and first.broken and len(calls) == 1
    provider(prov, soname, {soname: ["a", "b"]})  # the provider replaced by the matching release
    fixed = links.cached_binding(Host(), str(req), soname, str(prov), cache)
    assert not fixed.broken and len(calls) == 2
