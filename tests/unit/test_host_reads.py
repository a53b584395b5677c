"""Host.read_bytes reads what is there up to the limit, without allocating the limit."""

from __future__ import annotations

import tracemalloc

from fixdnn.target.host import Host


def test_reads_up_to_the_limit_and_size_less_files(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    host = Host()
    assert host.read_bytes(str(path), 10) == b"x" * 10
    assert host.read_bytes(str(path), 1000) == host.read_bytes(str(path), 1001) == b"x" * 1000
    (tmp_path / "empty").write_bytes(b"")
    assert host.read_bytes(str(tmp_path / "empty")) == b""
    assert host.read_bytes("/proc/self/status").startswith(b"Name:")  # st_size 0, content there


def test_a_large_limit_is_not_allocated(tmp_path):
    path = tmp_path / "RECORD"
    path.write_bytes(b"a.py,sha256=x,1\n" * 10)
    tracemalloc.start()
    try:
        Host().read_bytes(str(path), 64 << 20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # a 160-byte file, not a 64 MiB buffer
