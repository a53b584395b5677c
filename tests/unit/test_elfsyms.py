"""Symbol-version checks of a binding, against what the real glibc loader says when it loads the pair."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fixdnn.facts import elfsyms
from fixdnn.facts.links import check_binding
from fixdnn.target.host import Host
from tests.envkit.elfkit import build_so
from tests.envkit.symver import provider, requester

SONAME = "libnvJitLink.so.12"
NEW = {"libnvJitLink.so.12": ["nvJitLinkCreate", "__nvJitLinkGetErrorLogSize_12_9"]}
OLD = {"libnvJitLink.so.12": ["nvJitLinkCreate"]}


def glibc_says(path) -> str | None:
    """What dlopen(RTLD_NOW) answers for ``path`` (ctypes loads with RTLD_NOW): None when it loads."""
    proc = subprocess.run([sys.executable, "-c", "import ctypes, sys\ntry:\n    ctypes.CDLL(sys.argv[1])\n"
                           "except OSError as e:\n    print(e)\n", str(path)], capture_output=True, text=True, env={})
    return proc.stdout.strip() or None


@pytest.fixture
def pair(tmp_path):
    """libcusparse.so.12 built against the new nvJitLink; the folder holds whichever provider a test puts."""
    built = provider(tmp_path / "build" / SONAME, SONAME, NEW)
    lib = tmp_path / "lib"
    req = requester(lib / "libcusparse.so.12", "libcusparse.so.12", ["nvJitLinkCreate", "__nvJitLinkGetErrorLogSize_12_9"],
                    built)
    return req, lib


def test_matching_provider_binds_like_glibc(pair):
    req, lib = pair
    prov = provider(lib / SONAME, SONAME, NEW)
    check = check_binding(Host(), str(req), SONAME, str(prov))
    assert not check.broken and check.unknown is None
    assert glibc_says(req) is None


def test_missing_symbol_at_a_version_is_what_glibc_reports(pair):
    req, lib = pair
    prov = provider(lib / SONAME, SONAME, OLD)
    check = check_binding(Host(), str(req), SONAME, str(prov))
    assert check.missing_symbols == ("__nvJitLinkGetErrorLogSize_12_9@libnvJitLink.so.12",)
    assert check.missing_count == 1 and check.missing_versions == ()
    assert glibc_says(req) == check.loader_message()


def test_missing_version_is_what_glibc_reports(tmp_path):
    built = provider(tmp_path / "build" / SONAME, SONAME, {"V_1": ["nvJitLinkCreate"], "V_2": ["newer"]})
    req = requester(tmp_path / "lib/libcusparse.so.12", "libcusparse.so.12", ["nvJitLinkCreate", "newer"], built)
    prov = provider(tmp_path / "lib" / SONAME, SONAME, {"V_1": ["nvJitLinkCreate", "newer"]})
    check = check_binding(Host(), str(req), SONAME, str(prov))
    assert check.missing_versions == ("V_2",)
    assert glibc_says(req) == check.loader_message()


def test_a_version_named_like_the_soname_is_its_base_definition(pair):
    """ld writes the SONAME as the base version definition; glibc accepts a need of that name, then fails on
    the symbol: the nvJitLink case."""
    req, lib = pair
    prov = provider(lib / SONAME, SONAME, {"OTHER_1": ["nvJitLinkCreate", "__nvJitLinkGetErrorLogSize_12_9"]})
    check = check_binding(Host(), str(req), SONAME, str(prov))
    assert check.missing_versions == () and check.missing_count == 2
    assert glibc_says(req) == check.loader_message()  # the first symbol in the order ld.so binds them


def test_an_unversioned_provider_is_accepted_as_glibc_does(pair):
    req, lib = pair
    prov = build_so(lib / SONAME, SONAME, functions={"nvJitLinkCreate": 1, "__nvJitLinkGetErrorLogSize_12_9": 2})
    check = check_binding(Host(), str(req), SONAME, str(prov))
    assert not check.broken and check.unknown is None
    assert glibc_says(req) is None


def test_needs_and_defs_read_from_the_files(pair):
    req, lib = pair
    prov = provider(lib / SONAME, SONAME, {"V_1": ["nvJitLinkCreate"], "libnvJitLink.so.12": ["x"]})
    needs = elfsyms.version_needs(Host(), str(req), SONAME)
    assert needs.versions == (("libnvJitLink.so.12", False),)
    assert set(needs.symbols) == {("nvJitLinkCreate", "libnvJitLink.so.12"),
                                  ("__nvJitLinkGetErrorLogSize_12_9", "libnvJitLink.so.12")}
    assert elfsyms.version_needs(Host(), str(req), "libother.so.1").versions == ()
    assert set(elfsyms.version_defs(Host(), str(prov))) >= {"V_1", "libnvJitLink.so.12"}
    found = elfsyms.defines(Host(), str(prov), [("nvJitLinkCreate", "V_1"), ("nvJitLinkCreate", "libnvJitLink.so.12"),
                                                ("x", "libnvJitLink.so.12"), ("absent", "V_1")])
    assert found == {("nvJitLinkCreate", "V_1"): True, ("nvJitLinkCreate", "libnvJitLink.so.12"): False,
                     ("x", "libnvJitLink.so.12"): True, ("absent", "V_1"): False}


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "fifo", "missing"])
def test_unreadable_files_are_unknown_not_errors(pair, damage, tmp_path):
    req, lib = pair
    prov = provider(lib / SONAME, SONAME, NEW)
    bad = tmp_path / "bad.so"
    if damage == "truncated":
        bad.write_bytes(req.read_bytes()[: 3000])
    elif damage == "garbage":
        bad.write_bytes(b"\x7fELF" + b"\xff" * 200)
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "fifo":
        import os
        os.mkfifo(bad)
    assert elfsyms.version_needs(Host(), str(bad), SONAME) is None
    check = check_binding(Host(), str(bad), SONAME, str(prov))
    assert check.unknown and not check.broken
