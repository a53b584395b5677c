"""Every --json output of a real fixdnn process validates against its published JSON Schema
(docs/reference/schemas/*.json, generated from fixdnn/cli/schemas.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

jsonschema = pytest.importorskip("jsonschema")

from fixdnn.shell.envfile import EnvFile, EnvOp  # noqa: E402
from tests.envkit.cli import run_fixdnn
from tests.envkit.env import EnvBuilder, stray_cudnn  # noqa: E402

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "reference" / "schemas"


def published(name: str) -> dict:
    return json.loads((SCHEMAS / (name.replace("/", "-") + ".json")).read_text(encoding="utf-8"))


def undocumented(data, schema: dict, root: dict, where: str = "") -> list[str]:
    """Keys of ``data`` its schema does not list: an output that grew a key must document it."""
    def deref(node: dict) -> dict:
        return root["$defs"][node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node

    schema = deref(schema)
    for alt in schema.get("anyOf", ()):
        if alt.get("type") != "null" and data is not None:
            schema = deref(alt)
    out = []
    if isinstance(data, dict) and "properties" in schema:
        for key, value in data.items():
            if key not in schema["properties"]:
                out.append(f"{where}.{key}")
            else:
                out += undocumented(value, schema["properties"][key], root, f"{where}.{key}")
    elif isinstance(data, list) and "items" in schema:
        for n, item in enumerate(data):
            out += undocumented(item, schema["items"], root, f"{where}[{n}]")
    return out


def valid(stdout: str, expected: str) -> dict:
    """The output parsed, after checking it names ``expected``, matches that published schema and has
    no key the schema does not list."""
    data = json.loads(stdout)
    assert data["schema"] == expected
    schema = published(expected)
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(data), key=str)
    assert not errors, [f"{list(e.absolute_path)}: {e.message}" for e in errors]
    assert undocumented(data, schema, schema) == [], "keys missing from fixdnn/cli/schemas.py"
    return data


def run(args, environ, **kw):
    return run_fixdnn(args, environ, timeout=300, **kw)


def test_the_schemas_reject_what_they_should(tmp_path, environ):
    """A schema that accepts anything proves nothing: a renamed key and a wrong type are caught."""
    env = EnvBuilder(tmp_path / "venv").tensorflow_cuda12()
    data = json.loads(run(["--python", str(env.python), "--json"], environ).stdout)
    validator = jsonschema.Draft202012Validator(published("fixdnn.report/1"))
    assert not list(validator.iter_errors(data))
    renamed = {**data, "target": {k if k != "prefix" else "root": v for k, v in data["target"].items()}}
    assert list(validator.iter_errors(renamed))
    wrong = json.loads(json.dumps(data))
    wrong["frameworks"][0]["gpu_build"] = "yes"
    assert list(validator.iter_errors(wrong))
    grown = json.loads(json.dumps(data))
    grown["frameworks"][0]["new_key"] = 1
    assert undocumented(grown, published("fixdnn.report/1"), published("fixdnn.report/1")) == [".frameworks[0].new_key"]


def test_report_symptoms_env_verify_explain(tmp_path, environ):
    env = EnvBuilder(tmp_path / "venv").tensorflow_cuda12()
    broken = {**environ, "LD_LIBRARY_PATH": str(stray_cudnn(tmp_path / "old", "9.1.0"))}
    py = ["--python", str(env.python)]
    report = valid(run(py + ["--json"], broken).stdout, "fixdnn.report/1")
    assert any(s["name"] == "cudnn-version-mismatch" for s in report["symptoms"])
    planned = valid(run(py + ["--json", "--dry-run", "--offline"], broken).stdout, "fixdnn.report/1")
    assert "plan" in planned
    valid(run(["symptoms", "--json"], environ).stdout, "fixdnn.symptoms/1")
    facts = run(["facts", *py], broken)
    saved = tmp_path / "facts.json"
    saved.write_text(valid(facts.stdout, "fixdnn.facts/1") and facts.stdout)
    again = valid(run(["--facts", str(saved), "--json"], environ).stdout, "fixdnn.report/1")
    assert again["symptoms"] == report["symptoms"]  # the saved facts diagnose the same anywhere

    path = EnvFile.path_for(env.prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    EnvFile((EnvOp("unset", "KMP_DUPLICATE_LIB_OK", reason="folklore", fixes="openmp-duplicate"),)).dump(path)
    got = valid(run(["env", "--prefix", str(env.prefix), "--json"], environ).stdout, "fixdnn.env/1")
    assert got["operations"][0]["name"] == "KMP_DUPLICATE_LIB_OK"

    verified = valid(run(["verify", *py, "--json", "--timeout", "60"], broken).stdout, "fixdnn.verify/1")
    assert verified["passed"] or verified["findings"]
    text = "ImportError: libcudnn.so.9: cannot open shared object file: No such file or directory"
    explained = valid(run(["explain", *py, "--json", text], broken).stdout, "fixdnn.explain/1")
    assert explained["messages"]


def test_lock_apply_history_rollback(tmp_path):
    from fixdnn.facts import lockfile

    if not lockfile.available():  # conda-lock's models, as fixdnn imports them (not its whole CLI)
        pytest.skip("conda-lock is not installed")
    from tests.e2e.test_apply_kit import (
        cli_env,
        copy_venv,
        index_dir,
        pip_into,
        site_of,
    )

    env = cli_env(tmp_path / "state", index_dir())
    prefix = copy_venv(tmp_path / "venv", "cudnn910-pip")
    python = str(prefix / "bin/python")
    lock = tmp_path / "conda-lock.yml"
    locked = valid(run(["lock", "--python", python, "-o", str(lock), "--json"], env).stdout, "fixdnn.lock/1")
    assert locked["output"] == str(lock) and locked["pip_packages"] >= 1

    up = pip_into(python, env, "install", "nvidia-cudnn-cu12==9.3.0.75", check=False)
    assert up.returncode == 0, up.stderr
    refused = run(["--lock", str(lock), "apply", "--python", python, "--json"], env)
    assert refused.returncode == 2 and refused.stdout == "" and "--yes" in refused.stderr
    applied = run(["--lock", str(lock), "apply", "--python", python, "--json", "--yes"], env)
    data = valid(applied.stdout, "fixdnn.apply/1")
    assert applied.returncode == 0 and data["outcome"] == "applied", applied.stderr
    assert sorted(p.name for p in site_of(prefix).glob("nvidia_cudnn_cu12-*.dist-info")) == \
        ["nvidia_cudnn_cu12-9.1.0.70.dist-info"]

    hist = valid(run(["history", "--prefix", str(prefix), "--json"], env).stdout, "fixdnn.history/1")
    assert [t["id"] for t in hist["transactions"]] == [data["txn_id"]]
    back = valid(run(["rollback", "--prefix", str(prefix), "--json"], env).stdout, "fixdnn.rollback/1")
    assert back["txn_id"] == data["txn_id"] and back["steps_undone"] >= 1
