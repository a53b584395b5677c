"""install-corrupted (FDN401): real dist-info with true RECORD hashes (tests/envkit), one thing broken per test.

Tests run as root, so a chmod 000 file is still readable; "unreadable" is made with a directory, a FIFO or a
symlink loop where the file should be (the same code path: the file cannot be read as a regular file).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

import pytest

from fixdnn.facts import distributions, dumps, gather, integrity, loads_json
from fixdnn.knowledge import compat as compat_mod
from fixdnn.model.facts import TargetInfo
from fixdnn.symptoms.registry import diagnose
from fixdnn.target.host import Host
from fixdnn.target.interpreter import TargetSpec
from tests.conftest import run_diagnosis
from tests.envkit.env import EnvBuilder

BIG = 3 * (1 << 20) + 12345  # more than one 1 MiB chunk, not a multiple of it


def _write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


class Env:
    """A files-only environment (no interpreter needed: the facts come from the files)."""

    def __init__(self, prefix, conda=False):
        self.b = EnvBuilder(prefix, real_python=False, conda=conda)
        self.prefix = self.b.prefix
        self.site = self.b.site
        self.home = prefix.parent / "home"
        self.home.mkdir(exist_ok=True)
        self.environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.home)}

    def cudnn(self):
        files = {"nvidia/cudnn/lib/libcudnn.so.9": b"\x7fELF" + os.urandom(5000),
                 "nvidia/cudnn/lib/libcudnn_cnn.so.9": b"\x7fELF" + os.urandom(BIG),
                 "nvidia/cudnn/lib/libcudnn_ops.so.9": b"\x7fELF" + os.urandom(20000),
                 "nvidia/cudnn/include/cudnn_version.h": b"#define CUDNN_MAJOR 9\n"}
        for rel, data in files.items():
            _write(self.site / rel, data)
        self.b.add_dist("nvidia-cudnn-cu13", "9.24.0.43", list(files))
        return self

    @property
    def lib(self):
        return self.site / "nvidia/cudnn/lib"

    def host(self, root=None):
        return Host(root=root, environ=self.environ)

    def target(self, prefix=None):
        prefix = str(prefix or self.prefix)
        site = str(self.site) if prefix == str(self.prefix) else prefix + str(self.site)[len(str(self.prefix)):]
        return TargetInfo(python=None, python_version=None, prefix=prefix, base_prefix=prefix, kind="venv",
                          site_dirs=(site,))

    def check(self, verify_all=False, root=None, prefix=None):
        host = self.host(root)
        target = self.target(prefix)
        dists, _ = distributions.gather(host, target.site_dirs)
        return integrity.gather(host, target, dists, verify_all=verify_all)

    def bad(self, name="nvidia-cudnn-cu13", **kw):
        checks, unknowns = self.check(**kw)
        item = next(c for c in checks if c.distribution == name)
        return item, {b.path: b for b in item.bad}, unknowns


@pytest.fixture
def env(tmp_path):
    return Env(tmp_path / "env").cudnn()


def _b64(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


# -- showing and healthy cases -----------------------------------------------------------------------------
def test_healthy_install_has_no_bad_file_and_no_symptom(env):
    item, bad, unknowns = env.bad()
    assert bad == {} and unknowns == []
    assert item.checked == 7  # 4 files + METADATA, INSTALLER, WHEEL; RECORD itself has no hash
    assert item.skipped == 1 and item.source == "pip" and item.record.endswith("/RECORD")
    facts, symptoms = run_diagnosis(None, env.environ, prefix=env.prefix)
    assert [s.name for s in symptoms if s.name == "install-corrupted"] == []
    assert any(c.distribution == "nvidia-cudnn-cu13" and c.checked == 7 for c in facts.integrity)


def test_deleted_file_is_missing(env):
    (env.lib / "libcudnn_ops.so.9").unlink()
    _, bad, _ = env.bad()
    b = bad["nvidia/cudnn/lib/libcudnn_ops.so.9"]
    assert (b.problem, b.expected, b.actual) == ("missing", "20004 bytes", None)
    assert len(bad) == 1


def test_truncated_file_is_a_size_mismatch_without_hashing(env):
    path = env.lib / "libcudnn_cnn.so.9"
    with open(path, "r+b") as fh:
        fh.truncate(4096)
    before = integrity.HASH_CALLS
    _, bad, _ = env.bad()
    b = bad["nvidia/cudnn/lib/libcudnn_cnn.so.9"]
    assert (b.problem, b.expected, b.actual) == ("size", f"{BIG + 4} bytes", "4096 bytes")
    # cold cache: every file with the right size is hashed, the truncated one is not
    assert integrity.HASH_CALLS - before == 6


def test_flipped_byte_same_size_is_a_sha256_mismatch(env):
    path = env.lib / "libcudnn_cnn.so.9"
    original = path.read_bytes()
    data = bytearray(original)
    data[(1 << 20) + 7] ^= 0xFF  # in the second 1 MiB chunk
    path.write_bytes(bytes(data))
    _, bad, _ = env.bad()
    b = bad["nvidia/cudnn/lib/libcudnn_cnn.so.9"]
    assert b.problem == "sha256"
    assert b.expected == _b64(original) and b.actual == _b64(bytes(data))
    record = next(env.site.glob("nvidia_cudnn_cu13-*.dist-info")).joinpath("RECORD").read_text()
    assert f"nvidia/cudnn/lib/libcudnn_cnn.so.9,{b.expected},{BIG + 4}" in record


def test_symlink_to_another_file_is_reported_with_its_target(env, tmp_path):
    other = tmp_path / "elsewhere" / "libcuda.so.1"
    _write(other, b"\x7fELF" + os.urandom(20000))  # same size, other content
    path = env.lib / "libcudnn_ops.so.9"
    path.unlink()
    path.symlink_to(other)
    _, bad, _ = env.bad()
    b = bad["nvidia/cudnn/lib/libcudnn_ops.so.9"]
    assert b.problem == "sha256" and b.link == str(other)


def test_dangling_symlink_is_missing_with_its_target(env, tmp_path):
    path = env.lib / "libcudnn.so.9"
    path.unlink()
    path.symlink_to(tmp_path / "gone.so")
    _, bad, _ = env.bad()
    assert (bad["nvidia/cudnn/lib/libcudnn.so.9"].problem, bad["nvidia/cudnn/lib/libcudnn.so.9"].link) == \
        ("missing", str(tmp_path / "gone.so"))


@pytest.mark.parametrize("how", ["directory", "fifo", "loop"])
def test_unreadable_file_is_reported_not_raised(env, how):
    path = env.lib / "libcudnn_ops.so.9"
    path.unlink()
    if how == "directory":
        path.mkdir()
    elif how == "fifo":
        os.mkfifo(path)  # opening it would block forever: it must never be opened
    else:
        path.symlink_to(path)
    _, bad, _ = env.bad()
    b = bad["nvidia/cudnn/lib/libcudnn_ops.so.9"]
    assert b.problem == "unreadable"
    assert {"directory": "a directory", "fifo": "a FIFO", "loop": "Too many levels of symbolic links"}[how] in b.actual


def test_malformed_record_line_is_an_unknown_and_the_rest_is_checked(env):
    record = next(env.site.glob("nvidia_cudnn_cu13-*.dist-info")) / "RECORD"
    lines = record.read_text().splitlines()
    lines.insert(1, "nvidia/cudnn/lib/extra.so,sha256=!!!not base64!!!,12")
    lines.insert(2, "just-a-path-without-fields")
    lines.insert(3, "x.so,md5=abc,3")
    record.write_text("\n".join(lines) + "\n")
    (env.lib / "libcudnn.so.9").unlink()
    item, bad, unknowns = env.bad()
    assert list(bad) == ["nvidia/cudnn/lib/libcudnn.so.9"] and item.checked == 7
    assert len(unknowns) == 1 and "3 line(s) not checked" in unknowns[0].reason
    assert "line 2" in unknowns[0].reason and unknowns[0].what.startswith("RECORD of nvidia-cudnn-cu13")


def test_binary_garbage_record_does_not_crash(env):
    record = next(env.site.glob("nvidia_cudnn_cu13-*.dist-info")) / "RECORD"
    record.write_bytes(b"\x00\xff\xfe,,\n\"unterminated,quote\n" + os.urandom(300))
    item, bad, unknowns = env.bad()
    assert bad == {} and unknowns and "malformed" in unknowns[0].reason


def test_relative_paths_above_the_site_dir_are_checked_and_escapes_refused(tmp_path):
    env = Env(tmp_path / "env")
    _write(env.prefix / "lib/libiomp5.so", b"\x7fELF iomp" * 100)
    _write(tmp_path / "outside.txt", b"secret")
    rel = "../../../lib/libiomp5.so"  # as the real intel-openmp wheel's RECORD writes it
    folder = env.b.add_dist("intel-openmp", "2024.2.1", [rel])
    with open(folder / "RECORD", "a") as fh:
        escape = os.path.relpath(tmp_path / "outside.txt", env.site)
        fh.write(f"{escape},{_b64(b'other')},5\n")
    item, bad, unknowns = env.bad("intel-openmp")
    assert bad == {} and item.checked == 4  # libiomp5.so + 3 metadata files
    assert any("outside the environment" in u.reason and escape in u.reason for u in unknowns)
    (env.prefix / "lib/libiomp5.so").write_bytes(b"short")
    _, bad, _ = env.bad("intel-openmp")
    assert bad[rel].problem == "size"


def test_only_dnn_packages_by_default_every_package_with_verify_all(env):
    _write(env.site / "requests/__init__.py", b"x = 1\n")
    env.b.add_dist("requests", "2.32.0", ["requests/__init__.py"])
    (env.site / "requests/__init__.py").write_bytes(b"x = 2\n")
    checks, _ = env.check()
    assert {c.distribution for c in checks} == {"nvidia-cudnn-cu13"}
    checks, _ = env.check(verify_all=True)
    req = next(c for c in checks if c.distribution == "requests")
    assert [b.path for b in req.bad] == ["requests/__init__.py"] and req.bad[0].problem == "sha256"


@pytest.mark.parametrize("name,checked", [("torch", True), ("tf-nightly-cpu", True), ("jax-cuda12-pjrt", True),
                                          ("jax-cuda13-plugin", True), ("cuda-python", True), ("nvidia-nccl-cu12", True),
                                          ("onnxruntime-gpu", True), ("cupy-cuda12x", True), ("Intel_OpenMP", True),
                                          ("scipy", True), ("requests", False), ("torchvision", False)])
def test_relevance_patterns_come_from_the_rules(name, checked):
    assert integrity.relevant(name, integrity.load_patterns().pip) is checked


def test_symptom_evidence_is_capped_with_a_count(tmp_path):
    env = Env(tmp_path / "env")
    rels = [f"torch/lib/part{i:02d}.so" for i in range(15)]
    for rel in rels:
        _write(env.site / rel, rel.encode() * 10)
    env.b.add_dist("torch", "2.14.1", rels)
    for rel in rels:
        (env.site / rel).unlink()
    facts, symptoms = run_diagnosis(None, env.environ, prefix=env.prefix)
    s = next(s for s in symptoms if s.name == "install-corrupted")
    assert s.code == "FDN401" and s.severity == "error"
    assert s.evidence["distribution"] == "torch" and s.evidence["bad_count"] == 15
    assert len(s.evidence["bad_files"]) == 10 and s.evidence["not_shown"] == 5
    assert s.evidence["bad_files"][0] == {"path": rels[0], "problem": "missing", "expected": f"{len(rels[0]) * 10} bytes",
                                          "actual": None, "link": None}
    assert "pip install --force-reinstall --no-deps torch==2.14.1" in s.hint
    # the facts round-trip through JSON with the integrity results intact
    again = loads_json(dumps(facts))
    assert again.integrity == facts.integrity
    assert [x.name for x in diagnose(again, compat_mod.load())] == [x.name for x in symptoms]


# -- conda ---------------------------------------------------------------------------------------------------
def _conda_record(env, name, version, files: dict[str, bytes], extra=None):
    paths = []
    for rel, data in files.items():
        _write(env.prefix / rel, data)
        paths.append({"_path": rel, "path_type": "hardlink", "sha256": hashlib.sha256(data).hexdigest(),
                      "size_in_bytes": len(data)})
    paths += extra or []
    rec = {"name": name, "version": version, "build": "h123_0", "files": list(files),
           "paths_data": {"paths_version": 1, "paths": paths}}
    path = env.prefix / "conda-meta" / f"{name}-{version}-h123_0.json"
    path.write_text(json.dumps(rec))
    return path


def test_conda_package_with_a_bad_sha256(tmp_path):
    env = Env(tmp_path / "env", conda=True)
    _conda_record(env, "cudnn", "9.3.0.75", {"lib/libcudnn.so.9": b"\x7fELF" + b"a" * 3000,
                                             "include/cudnn.h": b"#pragma once\n"},
                  extra=[{"_path": "lib/libcudnn.so", "path_type": "softlink", "sha256": "00" * 32, "size_in_bytes": 1},
                         {"_path": "bin/cfg", "path_type": "hardlink", "prefix_placeholder": "/opt/anaconda1anaconda2",
                          "file_mode": "text", "sha256": "00" * 32, "size_in_bytes": 99}])
    _write(env.prefix / "bin/cfg", b"rewritten at link time\n")
    _conda_record(env, "zlib", "1.3", {"lib/libz.so.1": b"zlib"})
    checks, _ = env.check()
    assert [c.distribution for c in checks] == ["cudnn"]  # zlib is not a DNN package
    item = checks[0]
    assert (item.source, item.bad_count, item.checked, item.skipped) == ("conda", 0, 2, 2)
    (env.prefix / "lib/libcudnn.so.9").write_bytes(b"\x7fELF" + b"b" * 3000)
    facts, symptoms = run_diagnosis(None, env.environ, prefix=env.prefix)
    s = next(s for s in symptoms if s.name == "install-corrupted")
    assert s.evidence["source"] == "conda" and s.evidence["record"].endswith("cudnn-9.3.0.75-h123_0.json")
    bad = s.evidence["bad_files"][0]
    assert bad["path"] == "lib/libcudnn.so.9" and bad["problem"] == "sha256"
    assert bad["expected"] == "sha256:" + hashlib.sha256(b"\x7fELF" + b"a" * 3000).hexdigest()
    assert "conda install --force-reinstall cudnn=9.3.0.75" in s.hint


def test_conda_sha256_in_prefix_is_preferred_and_records_without_paths_data_are_skipped(tmp_path):
    env = Env(tmp_path / "env", conda=True)
    data = b"#!/env/prefix/bin/python\n"
    _write(env.prefix / "bin/tool", data)
    _conda_record(env, "numpy", "2.1.0", {}, extra=[
        {"_path": "bin/tool", "path_type": "hardlink", "prefix_placeholder": "/opt/placeholder", "file_mode": "text",
         "sha256": "11" * 32, "sha256_in_prefix": hashlib.sha256(data).hexdigest(), "size_in_bytes": 5}])
    (env.prefix / "conda-meta" / "mkl-2024.2.0-h1_0.json").write_text(json.dumps({"name": "mkl", "files": ["lib/x"]}))
    (env.prefix / "conda-meta" / "cudnn-9.1.0-h1_0.json").write_text("{not json")
    checks, unknowns = env.check()
    assert [(c.distribution, c.checked, c.bad_count) for c in checks] == [("numpy", 1, 0)]
    assert [u.what for u in unknowns] == ["conda record cudnn-9.1.0-h1_0.json"]


def test_conda_installed_pip_metadata_is_left_to_conda_meta(tmp_path):
    env = Env(tmp_path / "env", conda=True)
    _write(env.site / "numpy/core.so", b"abc")
    env.b.add_dist("numpy", "2.1.0", ["numpy/core.so"], installer="conda")
    (env.site / "numpy/core.so").write_bytes(b"patched by conda at link time")
    checks, _ = env.check()
    assert checks == ()


# -- --root and hostile paths ------------------------------------------------------------------------------
def test_root_reads_below_the_root(tmp_path):
    root = tmp_path / "image"
    env = Env(root / "opt" / "env")
    env.cudnn()
    # RECORD paths are relative, so the tree is valid seen from inside the root
    (env.lib / "libcudnn_ops.so.9").write_bytes(b"\x7fELF" + b"z" * 20000)
    _, bad, _ = env.bad(root=root, prefix="/opt/env")
    assert list(bad) == ["nvidia/cudnn/lib/libcudnn_ops.so.9"] and bad["nvidia/cudnn/lib/libcudnn_ops.so.9"].problem == "sha256"


def test_hostile_prefix_and_file_names(tmp_path):
    env = Env(tmp_path / "a b'c\"d$HOME\nnl \u00e9\u4e2d")
    rel = "nvidia/cudnn/lib/libcudnn_\u00e9 x$y'z.so.9"
    _write(env.site / rel, b"payload")
    env.b.add_dist("nvidia-cudnn-cu13", "9.24.0.43", [rel])
    item, bad, unknowns = env.bad()
    assert bad == {} and unknowns == [] and item.checked == 4
    (env.site / rel).write_bytes(b"PAYLOAD")
    _, bad, _ = env.bad()
    assert bad[rel].problem == "sha256"


SCRIPT_BODY = ("# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom numpy.f2py import main\n"
               "if __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
               "    sys.exit(main())\n")


def _numpy_with_a_script(tmp_path) -> tuple[EnvBuilder, object]:
    env = EnvBuilder(tmp_path / "packed")
    script = env.prefix / "bin" / "f2py"
    script.write_text("#!/build/old-prefix/bin/python3.11\n" + SCRIPT_BODY)
    (env.site / "numpy").mkdir()
    (env.site / "numpy/__init__.py").write_text("")
    env.add_dist("numpy", "2.3.0", ["numpy/__init__.py", "../../../bin/f2py"])
    return env, script


@pytest.mark.parametrize("first_line, corrupted", [
    ("#!{prefix}/bin/python", False),  # venv-pack / conda-pack / sed: relocated to where it is now
    ("#!/usr/bin/env python3", False),
    ("#!/tmp/evil/python", True),  # not this environment's interpreter: a change, not a relocation
])
def test_a_rewritten_shebang_is_relocation_not_corruption(tmp_path, first_line, corrupted):
    env, script = _numpy_with_a_script(tmp_path)
    script.write_text(first_line.format(prefix=env.prefix) + "\n" + SCRIPT_BODY)
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    facts, symptoms = run_diagnosis(env.python, environ)
    found = [s for s in symptoms if s.name == "install-corrupted"]
    assert bool(found) is corrupted, found
    check = next(c for c in facts.integrity if c.distribution == "numpy")
    assert [b.problem for b in check.bad] == (["size"] if corrupted else ["shebang"])


def test_a_changed_body_under_the_original_shebang_is_corruption(tmp_path):
    env, script = _numpy_with_a_script(tmp_path)
    script.write_text("#!/build/old-prefix/bin/python3.11\n" + SCRIPT_BODY.replace("main()", "evil()"))
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    facts, symptoms = run_diagnosis(env.python, environ)  # same size: a default run compares sizes only
    assert "install-corrupted" not in {s.name for s in symptoms}
    assert [c.size_only > 0 for c in facts.integrity if c.distribution == "numpy"] == [True]
    assert any("--verify-all" in u.reason for u in facts.unknowns)  # and says so: not a verdict of health
    facts = gather(Host(environ=environ), TargetSpec(python=str(env.python)), verify_all=True)
    symptoms = diagnose(facts, compat_mod.load())
    assert [s.evidence["distribution"] for s in symptoms if s.name == "install-corrupted"] == ["numpy"]
