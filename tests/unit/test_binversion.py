"""A copy known only by its major is asked for its version (issue 11 item 1): gcc-built stubs whose
``cudnnGetVersion`` returns a chosen number, with no header, wheel record or versioned file name."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest

from fixdnn.facts import binversion
from fixdnn.model.facts import LibraryCopy
from fixdnn.target.host import Host
from tests.conftest import names, run_diagnosis
from tests.envkit.elfkit import build_so
from tests.envkit.env import EnvBuilder


def bare_cudnn(folder, version: str):
    """Only the lib/ files of a cuDNN wheel: libcudnn.so.9 and its sub-libraries, nothing that names the
    version but the binary itself."""
    EnvBuilder(folder, real_python=False).add_cudnn_wheel(version, 13, location=folder, header=False, dist=False)
    return folder / "nvidia/cudnn/lib"


def torch_without_cudnn_wheel(tmp_path):
    env = EnvBuilder(tmp_path / "venv")
    env.add_torch()
    env.add_cuda_wheels(13)
    return env


def by_name(symptoms, name):
    return next(s for s in symptoms if s.name == name)


@pytest.mark.parametrize("family, value, expected", [
    ("cudnn", 91300, "9.13.0"), ("cudnn", 92400, "9.24.0"), ("cudnn", 8907, "8.9.7"), ("cudnn", 8600, "8.6.0"),
    ("cudart", 12050, "12.5"), ("cudart", 13000, "13.0"), ("cudnn", 0, None),
])
def test_decode(family, value, expected):
    assert binversion.decode(family, value) == expected


def test_an_old_copy_on_ld_library_path_is_a_mismatch_not_healthy(tmp_path, environ):
    """The issue's case: torch needs 9.24, LD_LIBRARY_PATH holds 9.13's lib/ files only. The file name says
    '9'; the binary says 91300, and that is what is compared."""
    env = torch_without_cudnn_wheel(tmp_path)
    lib = bare_cudnn(tmp_path / "cudnn-9.13", "9.13.0.50")
    environ["LD_LIBRARY_PATH"] = str(lib)
    facts, symptoms = run_diagnosis(env.python, environ)
    copy = facts.copy_at(str(lib / "libcudnn.so.9"))
    assert (copy.version, copy.version_source) == ("9.13.0", "cudnnGetVersion() = 91300")
    s = by_name(symptoms, "cudnn-version-mismatch")
    assert s.severity == "error" and s.evidence["loaded"]["version"] == "9.13.0"
    assert any("cudnnGetVersion() = 91300" in line for line in s.chain)


def test_healthy_twin_a_new_enough_bare_copy_is_silent(tmp_path, environ):
    env = torch_without_cudnn_wheel(tmp_path)
    lib = bare_cudnn(tmp_path / "cudnn-9.24", "9.24.0.43")
    environ["LD_LIBRARY_PATH"] = str(lib)
    facts, symptoms = run_diagnosis(env.python, environ)
    assert facts.copy_at(str(lib / "libcudnn.so.9")).version == "9.24.0"
    assert not [n for n in names(symptoms) if n.startswith("cudnn")], names(symptoms)


def test_a_copy_that_cannot_say_is_a_warning_with_what_to_run(tmp_path, environ):
    """No cudnnGetVersion at all (a damaged or foreign file): unknown, never 'satisfies 9.24'."""
    env = torch_without_cudnn_wheel(tmp_path)
    lib = bare_cudnn(tmp_path / "odd", "9.24.0.43")
    (lib / "libcudnn.so.9").unlink()
    build_so(lib / "libcudnn.so.9", "libcudnn.so.9", functions={"someOtherFunction": 1})
    environ["LD_LIBRARY_PATH"] = str(lib)
    facts, symptoms = run_diagnosis(env.python, environ)
    s = by_name(symptoms, "cudnn-version-unknown")
    assert s.severity == "warning" and s.evidence["loaded"]["path"] == str(lib / "libcudnn.so.9")
    assert "cudnnGetVersion" in s.evidence["why"] and str(lib / "libcudnn.so.9") in s.evidence["check"]
    assert "cudnn-version-mismatch" not in names(symptoms)
    assert any(u.what == f"version of {lib / 'libcudnn.so.9'}" for u in facts.unknowns)


def test_each_file_is_asked_once_per_identity(tmp_path, environ):
    lib = bare_cudnn(tmp_path / "c", "9.13.0.50")
    path = str(lib / "libcudnn.so.9")
    copy = LibraryCopy("cudnn", path, path, "libcudnn.so.9", "9", "SONAME libcudnn.so.9 (major only)", None)
    known = replace(copy, path=path + ".x", realpath=path + ".x", version="9.24.0")  # known: never asked
    host = Host(environ=environ)
    calls = []

    def counting(h, c):
        calls.append(c.realpath)
        return binversion.ask(h, c)

    first, _ = binversion.fill(host, (copy, known), ask=counting)
    second, _ = binversion.fill(host, (copy, known), ask=counting)
    assert calls == [path] and first == second and first[0].version == "9.13.0" and first[1] is known
    # replaced (pip replaces files, it does not write into them): a new identity is asked again
    os.unlink(path)
    build_so(path, "libcudnn.so.9", functions={"cudnnGetVersion": 92600})
    third, _ = binversion.fill(host, (copy,), ask=counting)
    assert calls == [path, path] and third[0].version == "9.26.0"


def test_dry_run_writes_no_cache(tmp_path, environ):
    lib = bare_cudnn(tmp_path / "c", "9.13.0.50")
    path = str(lib / "libcudnn.so.9")
    copy = LibraryCopy("cudnn", path, path, "libcudnn.so.9", "9", None, None)
    host = Host(environ=environ)
    binversion.fill(host, (copy,), save_cache=False)
    assert not binversion._cache_path(host).exists()
    binversion.fill(host, (copy,))
    assert binversion._cache_path(host).exists()


def test_files_of_a_root_image_are_never_run(tmp_path, environ):
    lib = bare_cudnn(tmp_path / "image/opt/c", "9.13.0.50")
    rel = "/" + str((lib / "libcudnn.so.9").relative_to(tmp_path / "image"))
    copy = LibraryCopy("cudnn", rel, rel, "libcudnn.so.9", "9", None, None)
    out, unknowns = binversion.fill(Host(root=tmp_path / "image", environ=environ), (copy,),
                                    ask=lambda h, c: pytest.fail("ran a file of a --root image"))
    assert out[0].version == "9" and "--root" in unknowns[0].reason


def test_the_command_to_read_it_by_hand_survives_a_hostile_path(tmp_path):
    lib = bare_cudnn(tmp_path / "it's a \"$HOME\" `x` dir", "9.13.0.50")
    path = str(lib / "libcudnn.so.9")
    copy = LibraryCopy("cudnn", path, path, "libcudnn.so.9", "9", None, None)
    command = binversion.how_to_check(copy)
    proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                          env={"PATH": os.path.dirname(sys.executable) + ":/usr/bin:/bin"})
    assert proc.stdout.strip() == "91300", (command, proc.stderr)
