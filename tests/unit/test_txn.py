"""Unit tests of the journal, lock, ids, backups and the verify judge (real files, no pip)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from fixdnn.model.actions import Action, Plan
from fixdnn.repair import transaction as txn
from fixdnn.repair.acceptance import judge


@pytest.fixture()
def prefix(tmp_path, monkeypatch):
    monkeypatch.setenv("FIXDNN_STATE_DIR", str(tmp_path / "state"))
    p = tmp_path / "env \"q\" ü\nnl"
    (p / "etc").mkdir(parents=True)
    return p


def test_ids_are_unique_within_one_clock_tick():
    ids = [txn.new_id() for _ in range(200)]
    assert len(set(ids)) == 200


def test_ids_sort_by_time_across_field_boundaries(monkeypatch):
    """Sorting ids as text must be sorting by time, also where a field rolls over (a 1-digit microsecond
    against a 6-digit one, 09:59:59 against 10:00:00, Jan 9 against Jan 10)."""
    utc = timezone.utc
    times = [datetime(2026, 1, 9, 9, 59, 59, 999999, utc), datetime(2026, 1, 9, 10, 0, 0, 5, utc),
             datetime(2026, 1, 9, 10, 0, 0, 50, utc), datetime(2026, 1, 10, 0, 0, 0, 0, utc),
             datetime(2026, 11, 1, 0, 0, 0, 7, utc)]
    clock = iter(times)

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return next(clock)

    monkeypatch.setattr(txn, "datetime", Clock)
    ids = [txn.new_id() for _ in times]
    assert sorted(reversed(ids)) == ids
    assert [txn.id_time(i) for i in ids] == [t.astimezone().strftime("%Y-%m-%d %H:%M:%S") for t in times]


def test_lock_refuses_second_holder_with_pid(prefix):
    with txn.EnvLock(prefix):
        with pytest.raises(txn.LockError, match=f"pid {os.getpid()}"):
            with txn.EnvLock(prefix):
                pass
        assert txn.is_locked(txn.env_state(prefix))
    assert not txn.is_locked(txn.env_state(prefix))
    with txn.EnvLock(prefix):
        pass


def test_torn_last_record_is_ignored(prefix):
    t = txn.Transaction.begin(str(prefix), {"actions": ["x"]})
    t.append({"op": "intent", "step": 1})
    t.close()
    with open(t.folder / "journal.jsonl", "ab") as fh:
        fh.write(b'{"op": "done", "st')
    rec = txn.load(t.folder)
    assert [r["op"] for r in rec.records] == ["begin", "intent"]
    assert rec.outcome == "interrupted"
    assert (str(prefix.resolve()), t.id) in [(p, i) for p, i in txn.interrupted_anywhere()]


def test_backup_and_undo_is_idempotent(prefix):
    existing = prefix / "etc" / "activate"
    existing.write_bytes(b"old\x00bytes")
    os.chmod(existing, 0o751)
    new = prefix / "etc" / "new dir" / "deep" / "file"
    with txn.EnvLock(prefix):
        t = txn.Transaction.begin(str(prefix), {})
        name = t.backup_files(1, [str(existing), str(new)])
        t.append({"op": "intent", "step": 1, "backup": name})
        existing.write_bytes(b"changed")
        new.parent.mkdir(parents=True)
        new.write_text("created")
        assert t.rollback() == 1
        assert t.rollback() == 0  # already undone: nothing to do twice
        t.finish("rolled-back")
    assert existing.read_bytes() == b"old\x00bytes" and oct(existing.stat().st_mode & 0o777) == "0o751"
    assert not (prefix / "etc" / "new dir").exists()
    assert txn.load(t.folder).outcome == "rolled-back" and not (t.folder / "OPEN").exists()


def test_stash_moves_by_rename_and_restores_modes(prefix):
    site = prefix / "lib" / "site"
    (site / "pkg" / "sub").mkdir(parents=True)
    f = site / "pkg" / "sub" / "lib.so"
    f.write_bytes(b"ELF")
    os.chmod(f, 0o755)
    os.chmod(site / "pkg" / "sub", 0o700)
    link = site / "pkg" / "link"
    link.symlink_to("sub/lib.so")
    ino = f.stat().st_ino
    with txn.EnvLock(prefix):
        t = txn.Transaction.begin(str(prefix), {})
        listing = t.write_json("step-1.listing.json", txn.scan(str(prefix), t.exclude()))
        name = t.prepare_stash(1, [str(f), str(link)], str(prefix), keep=(str(site),))
        t.append({"op": "intent", "step": 1, "stash": name, "listing": listing})
        t.do_stash(name)
        assert not (site / "pkg").exists()  # emptied folders go, like pip's uninstall
        (site / "pkg").mkdir()
        (site / "pkg" / "link").write_text("a new version")
        t.rollback()
    assert f.stat().st_ino == ino and f.read_bytes() == b"ELF" and oct(f.stat().st_mode & 0o777) == "0o755"
    assert os.readlink(link) == "sub/lib.so"
    assert oct((site / "pkg" / "sub").stat().st_mode & 0o777) == "0o700"


@dataclass
class S:
    name: str
    severity: str = "error"


def test_judge_requires_fixed_gone_and_no_new_errors():
    plan = Plan((Action("pip-install", fixes=("cudnn-version-mismatch",), packages=("a==1",)),
                 Action("manual", fixes=("driver-too-old",), text="update the driver")))
    before = [S("cudnn-version-mismatch"), S("driver-too-old")]
    assert judge(plan, before, [S("driver-too-old")]) == []
    assert judge(plan, before, [S("cudnn-version-mismatch")]) == ["still present: cudnn-version-mismatch"]
    assert judge(plan, before, [S("cudnn-missing"), S("odd", "warning")]) == ["new error: cudnn-missing"]
