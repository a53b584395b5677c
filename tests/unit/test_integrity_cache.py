"""The hash cache: a second run hashes nothing; any change to a file (mtime, inode) forces a re-hash.

Counted with the module's own instrumented counter (integrity.HASH_CALLS), never with timing.
"""

from __future__ import annotations

import json
import os

from fixdnn.base import state
from fixdnn.facts import integrity
from tests.unit.test_integrity import Env


def _cache_file(env) -> "os.PathLike":
    return state.env_dir(str(env.prefix), environ=env.environ) / integrity.CACHE_NAME


def _run(env):
    before = integrity.HASH_CALLS
    checks, _ = env.check()
    return integrity.HASH_CALLS - before, checks[0]


def test_second_run_hashes_nothing(tmp_path):
    env = Env(tmp_path / "env").cudnn()
    hashed, item = _run(env)
    assert hashed == 7 and item.bad_count == 0
    cache = _cache_file(env)
    assert cache.parent.parent.parent == env.home / ".local/state/fixdnn"  # under the (private) HOME
    data = json.loads(cache.read_text())
    assert data["schema"] == integrity.CACHE_SCHEMA and len(data["files"]) == 7
    mtime = cache.stat().st_mtime_ns
    hashed, item = _run(env)
    assert hashed == 0 and item.bad_count == 0 and item.checked == 7
    assert cache.stat().st_mtime_ns == mtime  # nothing new: the cache is not rewritten


def test_touched_file_is_rehashed(tmp_path):
    env = Env(tmp_path / "env").cudnn()
    _run(env)
    path = env.lib / "libcudnn_cnn.so.9"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    hashed, item = _run(env)
    assert hashed == 1 and item.bad_count == 0
    assert _run(env)[0] == 0


def test_rewritten_file_with_same_mtime_but_new_inode_is_rehashed_and_caught(tmp_path):
    env = Env(tmp_path / "env").cudnn()
    _run(env)
    path = env.lib / "libcudnn_ops.so.9"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[100] ^= 1
    tmp = path.with_name("new")
    tmp.write_bytes(bytes(data))
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)
    new = path.stat()
    assert (new.st_size, new.st_mtime_ns) == (st.st_size, st.st_mtime_ns) and new.st_ino != st.st_ino
    hashed, item = _run(env)
    assert hashed == 1 and [b.problem for b in item.bad] == ["sha256"]


def test_corrupt_cache_is_ignored_and_rebuilt(tmp_path):
    env = Env(tmp_path / "env").cudnn()
    _run(env)
    cache = _cache_file(env)
    for garbage in (b"{\"schema\": \"fixdnn.integrity-cache/1\", \"files\": {\"x\": [1,", b"\x00\xff", b"[]",
                    json.dumps({"schema": integrity.CACHE_SCHEMA, "files": {str(env.lib / "libcudnn.so.9"): ["a"]}}).encode()):
        cache.write_bytes(garbage)
        hashed, item = _run(env)
        assert item.bad_count == 0 and hashed >= 1
        assert len(json.loads(cache.read_text())["files"]) == 7
    assert sorted(p.name for p in cache.parent.iterdir()) == [integrity.CACHE_NAME, "target"]  # no temp files left


def test_a_cached_digest_never_hides_a_change(tmp_path):
    env = Env(tmp_path / "env").cudnn()
    _run(env)
    path = env.lib / "libcudnn.so.9"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    with open(path, "r+b") as fh:  # in place: same inode, new mtime/ctime
        fh.write(bytes(data))
    hashed, item = _run(env)
    assert hashed == 1 and [b.path for b in item.bad] == ["nvidia/cudnn/lib/libcudnn.so.9"]


def test_unwritable_state_dir_only_costs_time(tmp_path):
    env = Env(tmp_path / "env").cudnn()
    (env.home / ".local").write_text("a file where a folder should be")
    hashed, item = _run(env)
    assert hashed == 7 and item.bad_count == 0
    assert _run(env)[0] == 7  # no cache, no error


def _no_parsing(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("RECORD was parsed although the clean snapshot holds")

    monkeypatch.setattr(integrity, "parse_record", refuse)


def test_clean_snapshot_skips_parsing_and_hashing(tmp_path, monkeypatch):
    env = Env(tmp_path / "env").cudnn()
    _run(env)
    data = json.loads(_cache_file(env).read_text())
    [snap] = data["clean"].values()
    assert len(snap["files"]) == snap["checked"] == 7  # every RECORD entry that names a file
    _no_parsing(monkeypatch)
    hashed, item = _run(env)
    assert hashed == 0 and item.bad_count == 0 and item.checked == snap["checked"]


def test_metadata_only_changes_keep_the_cached_hashes(tmp_path):
    """A hard link, cp -al and chmod move the change time, not the content: nothing is hashed again."""
    env = Env(tmp_path / "env").cudnn()
    assert _run(env)[0] == 7
    files = sorted(p for p in env.lib.iterdir() if p.is_file() and not p.is_symlink())
    os.link(files[0], tmp_path / "a-hard-link")  # what cp -al does to every file
    for path in files:
        os.chmod(path, 0o700)
    hashed, item = _run(env)
    assert hashed == 0 and item.bad_count == 0 and item.checked == 7


def test_same_size_same_mtime_change_is_trusted_until_verify_all(tmp_path):
    """What the cache trusts, and what --verify-all checks anyway: a rewrite in place with the same size
    and the old modification time put back (same inode) keeps its cached digest on a normal run."""
    env = Env(tmp_path / "env").cudnn()
    _run(env)
    path = env.lib / "libcudnn_ops.so.9"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[64] ^= 1
    path.write_bytes(bytes(data))  # same size, same inode; restore mtime: only ctime betrays it
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    hashed, item = _run(env)
    assert hashed == 0 and item.bad_count == 0  # the documented trust
    before = integrity.HASH_CALLS
    checks, _ = env.check(verify_all=True)
    item = next(c for c in checks if c.distribution == "nvidia-cudnn-cu13")
    assert integrity.HASH_CALLS - before >= 7  # no cache trusted: every file hashed again
    assert item.bad_count == 1 and item.bad[0].problem == "sha256"
    assert integrity.load_cache(_cache_file(env))  # still readable
    assert not json.loads(_cache_file(env).read_text())["clean"]  # a bad package keeps no snapshot
    (env.lib / "libcudnn_cnn.so.9").unlink()
    _hashed, item = _run(env)
    assert {b.path.rsplit("/", 1)[-1] for b in item.bad} == {"libcudnn_ops.so.9", "libcudnn_cnn.so.9"}


def test_changed_record_is_parsed_again(tmp_path, monkeypatch):
    env = Env(tmp_path / "env").cudnn()
    _run(env)
    record = next(env.site.glob("nvidia_cudnn_cu13-*.dist-info/RECORD"))
    record.write_text(record.read_text() + "nvidia/cudnn/lib/extra.so,sha256=47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU,0\n")
    calls = []
    real = integrity.parse_record
    monkeypatch.setattr(integrity, "parse_record", lambda *a, **k: calls.append(1) or real(*a, **k))
    _hashed, item = _run(env)
    assert calls and item.bad_count == 1 and item.bad[0].problem == "missing"


def test_a_failing_hash_worker_is_reported_not_a_hang(tmp_path, monkeypatch):
    env = Env(tmp_path / "env").cudnn()

    def broken(*_args):
        raise RuntimeError("disk controller on fire")

    monkeypatch.setattr(integrity, "hash_file", broken)
    import pytest

    with pytest.raises(RuntimeError, match="on fire"):
        env.check()


def test_a_long_first_check_is_announced_once(tmp_path, monkeypatch):
    env = Env(tmp_path / "env").cudnn()
    monkeypatch.setattr(integrity, "NOTICE_BYTES", 1)  # the fixture's files are small
    said: list[str] = []
    host, target = env.host(), env.target()
    from fixdnn.facts import distributions

    dists, _ = distributions.gather(host, target.site_dirs)
    integrity.gather(host, target, dists, notice=said.append)
    assert len(said) == 1 and said[0].startswith("verifying 7 files")
    integrity.gather(host, target, dists, notice=said.append)
    assert len(said) == 1  # warm: nothing to hash, nothing to say
