"""ld.so.cache parsing against ldconfig itself, on caches generated for test trees and planted machines."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from fixdnn.facts.ldcache import describe_flags, flags_match, parse_ld_cache, read_ld_cache
from fixdnn.target.host import Host
from tests.envkit.elfkit import build_so

LDCONFIG = shutil.which("ldconfig") or ("/sbin/ldconfig" if shutil.os.path.exists("/sbin/ldconfig") else None)
needs_ldconfig = pytest.mark.skipif(LDCONFIG is None, reason="ldconfig not installed")
_LINE = re.compile(r"^\t(\S+) \(([^)]*)\) => (.+)$")


def _ldconfig_p(cache: str | None = None) -> list[tuple[str, str, str]]:
    argv = [LDCONFIG, "-p"] + (["-C", cache] if cache else [])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = _LINE.match(line)
        if m:
            rows.append((m.group(1), m.group(3), m.group(2).split(",")[0:2]))
    return rows


@needs_ldconfig
def test_a_full_size_cache_matches_ldconfig_p(tmp_path, machine):
    """A cache of real size and variety (ldconfig also scans its trusted system directories), read from the
    planted machine's /etc/ld.so.cache the way diagnosis reads it: same entries, same order, same flags."""
    conf = tmp_path / "ld.so.conf"
    conf.write_text("")
    made = tmp_path / "ld.so.cache"
    subprocess.run([LDCONFIG, "-X", "-C", str(made), "-f", str(conf)], check=True, capture_output=True)
    machine.write("/etc/ld.so.cache", made.read_bytes())
    cache = read_ld_cache(Host(system=machine.root))
    assert cache.error is None and cache.path == "/etc/ld.so.cache"
    expected = _ldconfig_p(str(made))
    assert len(expected) > 10
    assert [(e.soname, e.path) for e in cache.entries] == [(s, p) for s, p, _ in expected]  # same order
    for entry, (_, _, label) in zip(cache.entries, expected):
        assert describe_flags(entry.flags) == ",".join(label).strip()


def test_the_session_machine_has_no_loader_cache():
    """Default tests see a bare machine: this machine's own cache is never read (tests/conftest.py)."""
    assert read_ld_cache(Host()).error == "No such file or directory"


def _tree(tmp_path):
    build_so(tmp_path / "d1/libfdxq.so.1", "libfdxq.so.1")
    build_so(tmp_path / "d2/libfdxq.so.1", "libfdxq.so.1")  # same soname in a later directory
    build_so(tmp_path / "d2/libfdxr.so.2", "libfdxr.so.2")
    conf = tmp_path / "ld.so.conf"
    conf.write_text(f"{tmp_path}/d1\n{tmp_path}/d2\n")
    return conf


@needs_ldconfig
@pytest.mark.parametrize("fmt", ["new", "old", "compat"])
def test_generated_cache_every_format(tmp_path, fmt):
    conf = _tree(tmp_path)
    out = tmp_path / f"cache.{fmt}"
    # -X: do not touch links; the trusted system dirs are scanned too, which is fine.
    subprocess.run([LDCONFIG, "-X", "-c", fmt, "-C", str(out), "-f", str(conf)], check=True, capture_output=True)
    cache = read_ld_cache(Host(), str(out))
    assert cache.error is None and cache.format == fmt
    ours = [(e.soname, e.path) for e in cache.entries if e.soname.startswith("libfdx")]
    assert {name for name, _ in ours} == {"libfdxq.so.1", "libfdxr.so.2"}
    # The first libfdxq entry is the one the loader uses: the copy in the directory listed first.
    assert next(p for n, p in ours if n == "libfdxq.so.1") == f"{tmp_path}/d1/libfdxq.so.1"
    assert ("libfdxr.so.2", f"{tmp_path}/d2/libfdxr.so.2") in ours
    assert [(e.soname, e.path) for e in cache.entries] == [(s, p) for s, p, _ in _ldconfig_p(str(out))]
    assert all(flags_match(e.flags) for e in cache.entries if e.soname.startswith("libfdx"))


@needs_ldconfig
def test_cache_under_root_names_target_paths(tmp_path):
    root = tmp_path / "image"
    build_so(root / "opt/cudnn/lib/libcudnn.so.9", "libcudnn.so.9")
    (root / "etc").mkdir()
    (root / "etc/ld.so.conf").write_text("/opt/cudnn/lib\n")
    subprocess.run([LDCONFIG, "-r", str(root)], check=True, capture_output=True)
    cache = read_ld_cache(Host(root=root))
    assert cache.error is None
    assert ("libcudnn.so.9", "/opt/cudnn/lib/libcudnn.so.9") in [(e.soname, e.path) for e in cache.entries]


def test_flags():
    assert flags_match(0x0303) and flags_match(0x0001)
    assert not flags_match(0x0003)  # an i386 libc6 library is not for a 64-bit x86 process
    assert flags_match(0x0003, 32, "EM_386") and not flags_match(0x0303, 32, "EM_386")
    assert describe_flags(0x0303) == "libc6,x86-64" and describe_flags(1) == "ELF"


@needs_ldconfig
def test_broken_caches_are_results(tmp_path):
    conf = _tree(tmp_path)
    good = tmp_path / "cache"
    subprocess.run([LDCONFIG, "-X", "-C", str(good), "-f", str(conf)], check=True, capture_output=True)
    data = good.read_bytes()
    for blob, why in [
        (b"", "empty file"),
        (b"garbage" * 20, "unknown magic"),
        (data[:60], "do not fit"),  # header says N entries, file has room for none
        (data[: len(data) - 200], "outside the file"),  # strings cut off
    ]:
        cache = parse_ld_cache(blob)
        assert cache.entries == () and why in cache.error, (why, cache.error)
    missing = read_ld_cache(Host(), str(tmp_path / "nope"))
    assert missing.entries == () and missing.error == "No such file or directory"
