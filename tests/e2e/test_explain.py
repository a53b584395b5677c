"""fixdnn explain: every signature in rules/errors.toml matches its real messages inside noisy logs, and the
explanation names the cause that holds in a real (synthetic) environment."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from fixdnn.probes.explain import explain, is_harmless, match_text, render_lines
from fixdnn.symptoms.registry import load_rules
from tests.envkit import stubs
from tests.envkit.cli import run_fixdnn
from tests.envkit.env import EnvBuilder
from tests.envkit.machine import hermetic_environ

SIGNATURES = load_rules(include_user=False).errors
NOISE_BEFORE = ("2026-01-02 10:11:12.345678: I tensorflow/core/util/port.cc:153] some unrelated info\n"
                "\x1b[33mW0000 00:00:1700000000.1 12345 cuda_executor.cc:1000] a coloured warning\x1b[0m\r\n"
                "Traceback (most recent call last):\n  File \"train.py\", line 3, in <module>\n")
NOISE_AFTER = "\nDuring handling of the above exception, another exception occurred:\nend of log\n"


def test_catalog_has_40_signatures():
    assert len(SIGNATURES) >= 40
    assert len({s.id for s in SIGNATURES}) == len(SIGNATURES)


@pytest.mark.parametrize("sig_id,example", [(s.id, ex) for s in SIGNATURES for ex in s.examples])
def test_every_real_message_matches_inside_a_noisy_log(sig_id, example):
    log = NOISE_BEFORE + example + NOISE_AFTER
    found = match_text(log, SIGNATURES)
    ids = [m.signature.id for m in found]
    assert sig_id in ids, (sig_id, example, ids)
    m = next(m for m in found if m.signature.id == sig_id)
    assert m.line == 5  # the example starts on the 5th line of the log
    assert "\x1b" not in m.excerpt


def test_the_more_specific_signature_wins_where_one_match_contains_another():
    tf = next(s for s in SIGNATURES if s.id == "E03").examples[0]
    assert [m.signature.id for m in match_text(tf, SIGNATURES)] == ["E03"]  # not also torch's E16
    torch = "ImportError: libcudnn.so.9: cannot open shared object file: No such file or directory"
    assert "E16" in [m.signature.id for m in match_text(torch, SIGNATURES)]
    both = match_text(tf + "\n" + torch, SIGNATURES)
    assert {"E03", "E16"} <= {m.signature.id for m in both}  # a separate torch line still counts


def test_noise_alone_matches_nothing():
    assert match_text(NOISE_BEFORE + NOISE_AFTER, SIGNATURES) == []


def test_harmless_noise_is_said_to_be_harmless_and_the_real_error_is_explained():
    log = ("Unable to register cuDNN factory: Attempting to register factory for plugin cuDNN when one has "
           "already been registered\n" * 3 + "noise\nDNN library is not found.\n")
    ex = explain(match_text(log, SIGNATURES))
    by_id = {e.match.signature.id: e for e in ex.items}
    assert by_id["E10"].harmless and by_id["E10"].match.count == 3
    assert not by_id["E01"].harmless
    text = "\n".join(render_lines(ex))
    assert "E10 (line 1, 3 times)" in text and "harmless:" in text
    assert "E01 (line 5)" in text and "this error means: cuDNN could not be dlopen()ed" in text
    assert {s.id for s in SIGNATURES if is_harmless(s)} >= {"E10", "E11", "E12", "E13"}


def _env_without_cudnn(tmp_path):
    env = EnvBuilder(tmp_path / "venv 'q' $x ü")
    stubs.torch_package(env)
    env.add_cuda_wheels(13)
    return env


def _cli(args, env=None, stdin=None):
    environ = hermetic_environ(Path(env.prefix).parent if env else Path("/tmp"), PATH="/usr/bin:/bin")
    return run_fixdnn(args, environ, input=stdin, how="script")


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_cause_that_holds_here_and_its_fix(tmp_path):
    env = _env_without_cudnn(tmp_path)
    msg = "ImportError: libcudnn.so.9: cannot open shared object file: No such file or directory"
    proc = _cli(["--python", str(env.python), "explain", msg], env)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "E16 (line 1)" in out
    assert "in this environment the cause is FDN101 cudnn-missing" in out
    assert "the fix" in out and "Traceback" not in proc.stderr


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_healthy_environment_rules_the_known_causes_out(tmp_path):
    env = stubs.torch_env(EnvBuilder(tmp_path / "venv"))
    log = tmp_path / "log with space 'and' $dollar.txt"
    log.write_text(NOISE_BEFORE + "RuntimeError: cuDNN error: CUDNN_STATUS_NOT_INITIALIZED" + NOISE_AFTER)
    proc = _cli(["--python", str(env.python), "--json", "explain", "--log", str(log)], env)
    assert proc.returncode == 0, proc.stderr
    import json

    data = json.loads(proc.stdout)
    assert data["schema"] == "fixdnn.explain/1"
    (msg,) = data["messages"]
    assert msg["id"] == "E23" and msg["causes_here"] == []
    assert set(msg["ruled_out"]) == {"driver-too-old", "cudnn-incomplete", "cudnn-shadowed"}


def test_stdin_and_bad_input():
    proc = run_fixdnn(["explain"], dict(os.environ), input="OMP: Error #15: Initializing libiomp5.so, but found "
                      "libiomp5.so already initialized.\n", how="script")
    assert "E36 (line 1)" in proc.stdout
    missing = run_fixdnn(["explain", "--log", "/nonexistent/log\nfile"], dict(os.environ), how="script")
    assert missing.returncode == 2 and missing.stderr.startswith("fixdnn: --log") and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    nothing = run_fixdnn(["explain", "all is well"], dict(os.environ), how="script")
    assert nothing.returncode == 1 and "no known error message" in nothing.stdout
