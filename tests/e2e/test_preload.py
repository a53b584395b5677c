"""The in-process repair reaches a plain ``env/bin/python`` (no activation): real venv, gcc-built stub torch
with DT_NEEDED libcudnn.so.9, a behaving stub cuDNN outside the environment, apply and rollback."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path

import pytest

from fixdnn.model.actions import Action, Plan
from fixdnn.repair.apply import ApplyError, Target, apply_plan
from fixdnn.repair.transaction import rollback
from fixdnn.shell import preload
from tests.e2e.test_apply_kit import tree
from tests.envkit import stubs
from tests.envkit.env import EnvBuilder

IMPORT = "import torch; print('cudnn', torch.backends.cudnn.version())"


@pytest.fixture()
def world(tmp_path, monkeypatch, environ):
    """A torch venv whose cuDNN is only under <tmp>/opt (not on any search path), and a clean environ."""
    monkeypatch.setenv("FIXDNN_STATE_DIR", str(tmp_path / "state"))
    env = EnvBuilder(tmp_path / "venv")
    stubs.torch_package(env)
    env.add_cuda_wheels(13)
    lib = stubs.add_cudnn_wheel(env, location=tmp_path / "opt", dist=False)
    return env, lib, environ


def plain(env: EnvBuilder, environ: dict, code: str = IMPORT) -> subprocess.CompletedProcess:
    """``env/bin/python -c`` as cron or an IDE runs it: no activation, nothing exported."""
    return subprocess.run([str(env.python), "-c", code], env=environ, capture_output=True, text=True, timeout=60)


def ours(env: EnvBuilder) -> dict:
    """The tree, less the bytecode the stub torch writes for itself when an import succeeds."""
    return {k: v for k, v in tree(env.prefix).items() if "torch/__pycache__" not in k}


def repair_plan(lib: Path) -> Plan:
    fixes = ("cudnn-not-on-search-path",)
    return Plan((Action("path-prepend", fixes, name="LD_LIBRARY_PATH", value=str(lib)),
                 Action("preload", fixes, path=str(lib / "libcudnn.so.9"))))


def target(env: EnvBuilder) -> Target:
    return Target(str(env.prefix), str(env.python), (str(env.site),))


def test_plain_python_imports_after_apply_and_fails_again_after_rollback(world):
    env, lib, environ = world
    broken = plain(env, environ)
    assert broken.returncode != 0 and "libcudnn.so.9: cannot open shared object file" in broken.stderr
    before = ours(env)

    res = apply_plan(repair_plan(lib), target(env))
    assert res.outcome == "applied", res.reason
    assert (env.site / preload.PTH_NAME).is_file() and (env.site / "_fixdnn_preload.py").is_file()
    fixed = plain(env, environ)
    assert fixed.returncode == 0, fixed.stderr
    assert fixed.stdout.split() == ["cudnn", "92400"] and fixed.stderr == ""
    # children of that process get the loader variable the process itself could not use
    child = plain(env, environ, "import torch, os; print(os.environ['LD_LIBRARY_PATH'])")
    assert child.stdout.strip() == str(lib)

    rollback(str(env.prefix))
    assert ours(env) == before
    again = plain(env, environ)
    assert again.returncode != 0 and "libcudnn.so.9: cannot open shared object file" in again.stderr


def test_start_costs_no_import(world):
    """The .pth line imports the hook module and nothing else; no framework, no data read at start."""
    env, lib, environ = world
    code = "import sys; print(' '.join(sorted(sys.modules)))"
    # The baseline has a .pth file too: reading any .pth costs site its own imports (3.13 decodes them as
    # utf-8-sig), which is not the hook's doing.
    baseline = env.site / "fixdnn-test-baseline.pth"
    baseline.write_text("# a .pth that does nothing\n")
    without = set(plain(env, environ, code).stdout.split())
    apply_plan(repair_plan(lib), target(env))
    with_hook = set(plain(env, environ, code).stdout.split())
    assert with_hook - without == {"_fixdnn_preload"}
    # an environment that never imports a framework never reads the data nor loads a library
    maps = plain(env, environ, "print(open('/proc/self/maps').read())").stdout
    assert "libcudnn" not in maps


def test_hook_refuses_files_it_did_not_write(world):
    env, lib, environ = world
    apply_plan(repair_plan(lib), target(env))
    toml = env.prefix / "etc/fixdnn/env.toml"
    toml.write_text(toml.read_text() + "# edited by hand\n")
    run = plain(env, environ)
    lines = [ln for ln in run.stderr.splitlines() if ln.startswith("fixdnn preload:")]
    assert len(lines) == 1 and "env.toml changed since fixdnn wrote it" in lines[0]
    # the import itself proceeded, and failed the way it fails without the repair
    assert "libcudnn.so.9: cannot open shared object file" in run.stderr

    data = env.prefix / preload.DATA
    toml.write_text(toml.read_text().replace("# edited by hand\n", ""))
    assert plain(env, environ).returncode == 0
    data.write_text(data.read_text().replace(str(lib), "/elsewhere"))
    run = plain(env, environ)
    assert "is not the file fixdnn wrote" in run.stderr and run.returncode != 0


def test_changed_library_is_not_loaded(world):
    env, lib, environ = world
    apply_plan(repair_plan(lib), target(env))
    shim = lib / "libcudnn.so.9"
    os.utime(shim, ns=(shim.stat().st_atime_ns, shim.stat().st_mtime_ns + 10**9))
    run = plain(env, environ)
    assert "changed since fixdnn chose it" in run.stderr
    assert "libcudnn.so.9: cannot open shared object file" in run.stderr


def test_preload_of_missing_library_is_refused_before_any_change(world):
    env, lib, _environ = world
    before = tree(env.prefix)
    plan = Plan((Action("preload", ("x",), path=str(lib / "libcudnn.so.8")),))
    with pytest.raises(ApplyError, match="cannot preload a missing library"):
        apply_plan(plan, target(env))
    assert tree(env.prefix) == before


def test_in_process_variable_change_reaches_the_framework(world):
    """A non-loader variable is set in os.environ before the framework's own code runs."""
    env, lib, environ = world
    (env.site / "torch" / "__init__.py").write_text(
        "import os\nprint('seen', os.environ.get('TF_CPP_MIN_LOG_LEVEL'), os.environ.get('KMP_DUPLICATE_LIB_OK'))\n")
    plan = Plan((Action("env-set", ("x",), name="TF_CPP_MIN_LOG_LEVEL", value="1"),
                 Action("env-unset", ("y",), name="KMP_DUPLICATE_LIB_OK")))
    apply_plan(plan, target(env))
    run = plain(env, {**environ, "KMP_DUPLICATE_LIB_OK": "TRUE"}, "import torch")
    assert run.stdout.split() == ["seen", "1", "None"], run.stderr
    data = json.loads((env.prefix / preload.DATA).read_text())
    assert all(op["in_process"] for op in data["ops"])


def test_hook_source_is_python38_stdlib_only():
    source = preload.hook_source().decode()
    tree_ = ast.parse(source, feature_version=(3, 8))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree_) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree_) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"os", "sys", "json", "hashlib", "ctypes"}
    top = {alias.name for node in tree_.body if isinstance(node, ast.Import) for alias in node.names}
    assert top == {"os", "sys"}  # everything else is imported only when a framework is first imported


def test_loader_variables_are_said_not_to_reach_the_process():
    from fixdnn.shell.envfile import EnvOp

    assert preload.in_process(EnvOp("path-prepend", "LD_LIBRARY_PATH", "/x"))[0] is False
    assert preload.in_process(EnvOp("set", "CUDA_MODULE_LOADING", "LAZY"))[0] is True
