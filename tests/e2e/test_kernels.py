"""Jupyter kernels of a repaired environment: real kernels started with jupyter_client, before and after apply
and after rollback; kernelspecs inside the environment and in the user's data dir (the test's own tree).

ipykernel and jupyter_client come from the test extra, installed beside pytest: the session links each
distribution they need (their files as this interpreter has them) into one folder, which a ``.pth`` line
makes importable in each test venv. No test installs anything from an index.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from fixdnn.facts.kernelspecs import find
from fixdnn.model.actions import Action, Plan
from fixdnn.probes.everywhere import kernel_findings, kernel_run
from fixdnn.repair.apply import Target, apply_plan
from fixdnn.repair.transaction import rollback
from fixdnn.shell.envfile import EnvFile, EnvOp
from fixdnn.shell.kernelspec import render
from fixdnn.target.host import Host
from tests.e2e.test_apply_kit import tree
from tests.envkit import stubs
from tests.envkit.cli import run_fixdnn
from tests.envkit.env import EnvBuilder

KERNEL_DISTS = ("ipykernel", "jupyter_client")  # in pyproject's test extra


def needed_by(names: tuple[str, ...]) -> list[importlib.metadata.Distribution]:
    """The installed distributions ``names`` need to run: themselves and their requirements, transitively
    (markers evaluated for this interpreter, no extras)."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name not in found:
            found[name] = importlib.metadata.distribution(name)
            for line in found[name].requires or ():
                req = Requirement(line)
                if req.marker is None or req.marker.evaluate({"extra": ""}):
                    todo.append(req.name)
    return list(found.values())


@pytest.fixture(scope="session")
def jupyter_site(tmp_path_factory) -> Path:
    """One folder holding links to every top-level file and folder of those distributions (their packages,
    modules, dist-info and bundled libraries), as a ``pip install --target`` folder holds them."""
    try:
        dists = needed_by(KERNEL_DISTS)
    except importlib.metadata.PackageNotFoundError as exc:
        msg = f"real Jupyter kernels need {exc.name} (pyproject's test extra): pip install -e '.[test]'"
        if os.environ.get("CI"):
            pytest.fail(f"{msg}; it is required when CI is set", pytrace=False)
        pytest.skip(msg)
    folder = tmp_path_factory.mktemp("jupyter-site")
    for dist in dists:
        for top in {f.parts[0] for f in dist.files or () if f.parts[0] not in ("..", "__pycache__")}:
            link = folder / top
            if not link.exists():
                link.symlink_to(Path(dist.locate_file(top)).resolve())
    assert (folder / "ipykernel_launcher.py").is_file(), sorted(os.listdir(folder))
    return folder


def kernelspec(folder: Path, python: Path) -> Path:
    folder.mkdir(parents=True)
    spec = {"argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "fx", "language": "python", "metadata": {"debugger": True}}
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1) + "\n")
    return folder / "kernel.json"


@pytest.fixture()
def world(tmp_path, monkeypatch, environ, jupyter_site):
    monkeypatch.setenv("FIXDNN_STATE_DIR", str(tmp_path / "state"))
    env = EnvBuilder(tmp_path / "venv")
    stubs.torch_package(env)
    env.add_cuda_wheels(13)
    lib = stubs.add_cudnn_wheel(env, location=tmp_path / "opt", dist=False)
    (env.site / "zz-test-jupyter.pth").write_text(str(jupyter_site) + "\n")
    inside = kernelspec(env.prefix / "share/jupyter/kernels/fx-env", env.python)
    user = kernelspec(tmp_path / "user-data/kernels/fx-user", env.python)
    other = kernelspec(tmp_path / "user-data/kernels/other", Path("/usr/bin/python3"))
    environ = {**environ, "JUPYTER_DATA_DIR": str(tmp_path / "user-data")}
    return env, lib, environ, (inside, user, other)


def specs_of(env, environ):
    return [k for k in find(Host(environ=environ), str(env.prefix)) if k.runs_env]


def kernels(env, environ) -> dict[str, tuple[list, list]]:
    out = {}
    for spec in specs_of(env, environ):
        run = kernel_run(str(env.python), spec, ["torch"], environ, timeout=120)
        out[spec.name] = kernel_findings(run, spec)
    return out


def test_kernelspecs_are_found_in_jupyters_order(world, machine):
    env, _lib, environ, (inside, user, other) = world
    found = {k.name: k for k in find(Host(environ=environ), str(env.prefix))}
    assert {n: (k.location, k.runs_env) for n, k in found.items()} == {
        "fx-user": ("user", True), "other": ("user", False), "fx-env": ("env", True)}
    assert found["fx-env"].inside and not found["fx-user"].inside
    # the system's Jupyter folders are machine-wide places: a planted machine, never the test's host
    machine.write("/usr/share/jupyter/kernels/fx-user/kernel.json", user.read_text())
    machine.write("/usr/local/share/jupyter/kernels/sys/kernel.json", user.read_text())
    found = find(Host(environ={**environ, "JUPYTER_PATH": str(env.prefix / "nowhere")}, system=machine.root),
                 str(env.prefix))
    assert [(k.name, k.location, k.shadowed) for k in found] == [
        ("fx-user", "user", False), ("other", "user", False), ("fx-env", "env", False), ("sys", "system", False),
        ("fx-user", "system", True)]


def test_real_kernel_before_apply_after_and_after_rollback(world):
    env, lib, environ, (inside, user, _other) = world
    for findings, passed in kernels(env, environ).values():  # broken before
        assert not passed and any("libcudnn.so.9" in f.summary for f in findings), findings
    before = {k: v for k, v in tree(env.prefix).items() if "__pycache__" not in k}
    user_before = user.read_bytes()

    specs = tuple(k.path for k in specs_of(env, environ))
    fixes = ("cudnn-not-on-search-path",)
    plan = Plan((Action("path-prepend", fixes, name="LD_LIBRARY_PATH", value=str(lib)),
                 Action("preload", fixes, path=str(lib / "libcudnn.so.9"))))
    res = apply_plan(plan, Target(str(env.prefix), str(env.python), (str(env.site),), specs))
    assert res.outcome == "applied", res.reason
    data = json.loads(user.read_text())
    assert data["env"] == {"LD_LIBRARY_PATH": str(lib)} and data["metadata"]["debugger"] is True
    assert data["metadata"]["fixdnn"]["env"] == {"LD_LIBRARY_PATH": None}
    after = kernels(env, environ)
    assert set(after) == {"fx-env", "fx-user"}
    for findings, passed in after.values():
        assert [f for f in findings if f.severity == "error"] == [], findings
        assert any("import torch works (cuDNN 92400)" in p for p in passed), passed

    rollback(str(env.prefix))
    assert user.read_bytes() == user_before
    assert {k: v for k, v in tree(env.prefix).items() if "__pycache__" not in k} == before
    for findings, passed in kernels(env, environ).values():
        assert not passed and any(f.severity == "error" for f in findings)


def test_kernelspec_env_render_is_idempotent_and_keeps_its_own_values():
    own = json.dumps({"argv": ["/e/bin/python"], "env": {"LD_LIBRARY_PATH": "/mine", "KMP_DUPLICATE_LIB_OK": "TRUE",
                                                         "OTHER": "1"}}, indent=1) + "\n"
    env = EnvFile((EnvOp("path-prepend", "LD_LIBRARY_PATH", "/opt/c/lib"), EnvOp("unset", "KMP_DUPLICATE_LIB_OK"),
                   EnvOp("set", "TF_CPP_MIN_LOG_LEVEL", "1")))
    once = render(own, env)
    data = json.loads(once)
    assert data["env"] == {"LD_LIBRARY_PATH": "/opt/c/lib:/mine", "OTHER": "1", "TF_CPP_MIN_LOG_LEVEL": "1"}
    assert data["metadata"]["fixdnn"]["env"] == {"KMP_DUPLICATE_LIB_OK": "TRUE", "LD_LIBRARY_PATH": "/mine",
                                                 "TF_CPP_MIN_LOG_LEVEL": None}
    assert render(once, env) == once
    # fewer changes later: it starts again from the kernelspec's own values
    assert json.loads(render(once, EnvFile(env.ops[:1])))["env"]["KMP_DUPLICATE_LIB_OK"] == "TRUE"
    assert render(own, EnvFile()) == own


def test_fixdnn_env_lists_kernelspecs(world):
    env, lib, environ, _specs = world
    cli = ["--prefix", str(env.prefix), "env"]
    run = run_fixdnn(cli, environ, how="script")
    assert run.returncode == 0, run.stderr
    assert "kernelspec fx-user:" in run.stdout and "user; runs this environment" in run.stdout
    assert "kernelspec other:" in run.stdout and "runs /usr/bin/python3" in run.stdout
    data = json.loads(run_fixdnn(cli[:-1] + ["--json", "env"], environ, how="script").stdout)
    assert {k["name"] for k in data["kernelspecs"] if k["runs_env"]} == {"fx-user", "fx-env"}
    assert data["in_process"]["installed"] is False
    assert os.path.isdir(env.prefix)


def test_verify_checks_plain_python_and_each_kernel(world):
    env, lib, environ, _specs = world
    fixes = ("cudnn-not-on-search-path",)
    specs = tuple(k.path for k in specs_of(env, environ))
    plan = Plan((Action("path-prepend", fixes, name="LD_LIBRARY_PATH", value=str(lib)),
                 Action("preload", fixes, path=str(lib / "libcudnn.so.9"))))
    assert apply_plan(plan, Target(str(env.prefix), str(env.python), (str(env.site),), specs)).outcome == "applied"
    cli = ["--prefix", str(env.prefix), "--json", "verify", "--timeout", "120"]
    environ = {**environ, "FIXDNN_STATE_DIR": os.environ["FIXDNN_STATE_DIR"]}
    out = json.loads(run_fixdnn(cli, environ, timeout=600, how="script").stdout)
    passed = "\n".join(out["passed"])
    assert "plain env/bin/python, no activation: torch: import torch works" in passed
    assert "kernel fx-user" in passed and "kernel fx-env" in passed
    assert not [f for f in out["findings"] if f["severity"] == "error"], out["findings"]

    # a hand-edited env.toml: the hook refuses, and verify says so for plain python; the kernels still load
    # the copy, through the LD_LIBRARY_PATH their kernelspec env gives the loader before the kernel starts
    toml = env.prefix / "etc/fixdnn/env.toml"
    toml.write_text(toml.read_text() + "# edited\n")
    out = json.loads(run_fixdnn(cli, environ, timeout=600, how="script").stdout)
    errors = [f["summary"] for f in out["findings"] if f["severity"] == "error"]
    assert any(s.startswith("plain env/bin/python, no activation: torch: import torch failed") for s in errors)
    assert len(errors) == 1, errors
    assert "kernel fx-user" in "\n".join(out["passed"])


def test_cli_plan_names_kernelspecs_outside_the_environment_then_applies_to_them(world):
    env, lib, environ, (inside, user, other) = world
    environ = {**environ, "CUDNN_PATH": str(lib.parent), "FIXDNN_STATE_DIR": os.environ["FIXDNN_STATE_DIR"]}
    cli = ["--python", str(env.python), "--offline"]
    dry = json.loads(run_fixdnn(cli + ["--dry-run", "--json"], environ, timeout=300, how="script").stdout)["plan"]
    assert [a["kind"] for a in dry["actions"]][:2] == ["path-prepend", "preload"], dry["actions"]
    reach = {r["where"]: r["reaches"] for r in dry["actions"][0]["reach"]}
    assert reach["in-process"] == "" and reach["kernelspec"].startswith("2 Jupyter kernelspec")
    assert {k["name"]: k["inside"] for k in dry["kernelspecs"]} == {"fx-user": False, "fx-env": True}
    assert any(n.startswith(f"outside the environment: kernelspec {user}") for n in dry["notes"])
    assert any(f["path"] == str(user) for f in dry["files"])  # the kernel.json diff is shown, not written
    assert "env" not in json.loads(user.read_text()) and "env" not in json.loads(other.read_text())

    run = run_fixdnn(cli + ["apply", "--yes"], environ, timeout=300, how="script")
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"kernelspec fx-user: {user} gets the variables in its 'env' (OUTSIDE the environment" in run.stdout
    assert "in-process: not reached: LD_LIBRARY_PATH is read by the dynamic loader" in run.stdout
    assert json.loads(user.read_text())["env"] == {"LD_LIBRARY_PATH": str(lib)}
    assert "env" not in json.loads(other.read_text())  # runs another interpreter: never touched
