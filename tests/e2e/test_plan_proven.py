"""Plans proven in the model, end to end on real venvs: the fallbacks the model chooses really work.

Each test breaks one thing in a real venv (gcc-built cuDNN stand-ins that behave like the real one, see
tests/envkit/stubs.py), runs the real CLI with pip isolated from this machine's configuration
(PIP_CONFIG_FILE=/dev/null, the test's own constraints and find-links), and checks what the plan chose,
why the others were rejected, and, where it applies, that the framework stub then really loads the copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.envkit import stubs
from tests.envkit.cli import run_fixdnn
from tests.envkit.env import EnvBuilder, stray_cudnn

PIN = "nvidia-cudnn-cu13==9.24.0.43"


def environ(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8", "PIP_CONFIG_FILE": os.devnull,
           "PIP_DISABLE_PIP_VERSION_CHECK": "1", "FIXDNN_STATE_DIR": str(tmp_path / "state")}
    env.update(extra)
    return env


def fixdnn(env: dict, *args: str) -> subprocess.CompletedProcess:
    return run_fixdnn(args, env, timeout=300, how="script")


def dry_run(env: dict, python: Path, *args: str) -> dict:
    proc = fixdnn(env, "--python", str(python), "--dry-run", "--json", *args)
    assert proc.returncode in (0, 1), proc.stderr
    return json.loads(proc.stdout)["plan"]


def step_of(plan: dict, kind: str = "path-prepend") -> dict:
    """The plan's one step of this kind (a copy-on-disk remedy also preloads the copy in-process)."""
    [step] = [a for a in plan["actions"] if a["kind"] == kind]
    return step


def remedies(plan: dict) -> list[str]:
    return list(dict.fromkeys(a["remedy"] for a in plan["actions"]))


def status(plan: dict, remedy: str) -> str:
    return next(x["status"] for x in plan["alternatives"] if x["remedy"] == remedy)


@pytest.fixture()
def torch_no_cudnn(tmp_path):
    """A venv whose behaving torch stub lost its cuDNN wheel; a good cuDNN 9.24 copy sits in a folder no
    search path reaches (found by fixdnn through CUDNN_PATH, as a tarball under /opt would be)."""
    env = stubs.torch_env(EnvBuilder(tmp_path / "torch env"))
    shutil.rmtree(env.cudnn_lib.parent)
    shutil.rmtree(next(env.site.glob("nvidia_cudnn_cu13-*.dist-info")))
    opt = tmp_path / "opt cudnn"
    lib = stubs.add_cudnn_wheel(env, "9.24.0.43", location=opt, dist=False)
    return env, lib


def torch_cudnn_version(prefix: Path, env: dict) -> subprocess.CompletedProcess:
    """Import the torch stub in a bash that sourced the environment's activation script."""
    script = f'. "{prefix}/bin/activate" && python -c "import torch; print(torch.backends.cudnn.version())"'
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)


def test_offline_falls_back_to_the_copy_on_disk_which_then_really_loads(torch_no_cudnn, tmp_path):
    env, lib = torch_no_cudnn
    cenv = environ(tmp_path, CUDNN_PATH=str(lib.parent))
    plan = dry_run(cenv, env.python, "--offline")
    step = step_of(plan)
    assert (step["value"], step["proven"]) == (str(lib), True)
    assert step["proof"] == "in the model: removes cudnn-not-on-search-path (torch)"
    assert status(plan, "cudnn-not-on-search-path.framework-pin").startswith("no installer can fetch wheels")
    assert torch_cudnn_version(env.prefix, cenv).returncode != 0  # broken before

    proc = fixdnn(cenv, "--python", str(env.python), "--offline", "apply", "--yes")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "proven: in the model: removes cudnn-not-on-search-path (torch)" in proc.stdout
    assert "hash -r" in proc.stdout and "bin/activate" in proc.stdout  # what the current shell must do
    loaded = torch_cudnn_version(env.prefix, cenv)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "92400", loaded.stderr

    # Nothing left to fix as the activated environment sees it: no second transaction.
    again = fixdnn(cenv, "--python", str(env.python), "--offline", "apply", "--yes")
    assert "nothing to apply" in again.stdout, again.stdout + again.stderr
    history = fixdnn(cenv, "--prefix", str(env.prefix), "--json", "history")
    assert len(json.loads(history.stdout)["transactions"]) == 1, history.stdout


def test_unreachable_copy_never_justifies_removing_the_path_entry(torch_no_cudnn, tmp_path):
    env, lib = torch_no_cudnn
    stale = stray_cudnn(tmp_path / "stale", "9.1.0")
    cenv = environ(tmp_path, CUDNN_PATH=str(lib.parent), LD_LIBRARY_PATH=str(stale))
    plan = dry_run(cenv, env.python, "--offline")
    # Removing the stale entry would leave torch with no cuDNN at all: the model rejects it...
    assert status(plan, "cudnn-version-mismatch.drop-ld-library-path") == \
        "in the model: new error cudnn-not-on-search-path (torch)"
    # ...and reaches the good copy instead.
    step = step_of(plan)
    assert (step["value"], step["remedy"]) == (str(lib), "cudnn-version-mismatch.copy-on-disk")
    # --use forces the rejected remedy: shown unproven, and apply refuses it without --force-unproven.
    forced = dry_run(cenv, env.python, "--offline", "--use", "cudnn-version-mismatch.drop-ld-library-path")
    step = step_of(forced, "path-remove")
    assert step["proven"] is False and forced["proven"] is False
    refused = fixdnn(cenv, "--python", str(env.python), "--offline", "--use",
                     "cudnn-version-mismatch.drop-ld-library-path", "apply", "--yes")
    assert refused.returncode == 1 and "refused: the model does not show" in refused.stderr
    assert "--force-unproven" in refused.stderr and not (env.prefix / "etc/fixdnn").exists()


def wheels_folder(tmp_path: Path) -> Path:
    """A find-links folder holding the pin (a real wheel, gcc-built libcudnn.so.9)."""
    from tests.envkit.index import build_wheel

    folder = tmp_path / "wheels"
    build_wheel(folder, "nvidia-cudnn-cu13", "9.24.0.43", libs={"nvidia/cudnn/lib/libcudnn.so.9": "libcudnn.so.9"},
                tag="py3-none-manylinux_2_27_x86_64")
    return folder


def test_use_and_skip_choose_among_proven_remedies(torch_no_cudnn, tmp_path):
    env, lib = torch_no_cudnn
    cenv = environ(tmp_path, CUDNN_PATH=str(lib.parent), PIP_FIND_LINKS=str(wheels_folder(tmp_path)),
                   PIP_NO_INDEX="1")
    plan = dry_run(cenv, env.python)
    [step] = plan["actions"]  # the rule file prefers the framework's pin, proven and available
    assert (step["remedy"], step["available"], step["proven"]) == ("cudnn-not-on-search-path.framework-pin", True, True)
    assert status(plan, "cudnn-not-on-search-path.copy-on-disk") == "not tried: an earlier remedy was chosen"
    for choice in (("--use", "cudnn-not-on-search-path.copy-on-disk"),
                   ("--skip", "cudnn-not-on-search-path.framework-pin")):
        other = dry_run(cenv, env.python, *choice)
        step = step_of(other)
        assert remedies(other) == ["cudnn-not-on-search-path.copy-on-disk"] and step["proven"] is True, choice
    skipped = dry_run(cenv, env.python, "--skip", "cudnn-not-on-search-path.framework-pin")
    assert status(skipped, "cudnn-not-on-search-path.framework-pin") == "skipped (--skip)"
    bad = fixdnn(cenv, "--python", str(env.python), "--dry-run", "--use", "no-such.remedy")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--use no-such.remedy: no such remedy" in bad.stderr


def test_pythonpath_shadow_is_removed_not_reinstalled(tmp_path):
    env = stubs.torch_env(EnvBuilder(tmp_path / "torch env"))
    libs = tmp_path / "home libs"
    stubs.add_cudnn_wheel(env, "9.13.0.50", location=libs, dist=False)
    cenv = environ(tmp_path, PYTHONPATH=str(libs))
    plan = dry_run(cenv, env.python)
    kinds = [(a["kind"], a.get("name"), a.get("value")) for a in plan["actions"]]
    assert kinds == [("path-remove", "PYTHONPATH", str(libs))], plan
    assert plan["actions"][0]["proven"] is True
    assert "cudnn-version-mismatch" in plan["actions"][0]["fixes"]
    # The wheel is installed: reinstalling it is never chosen (pip would change nothing), even
    # when the remedy that removes the entry for this symptom is left out.
    other = dry_run(cenv, env.python, "--skip", "cudnn-version-mismatch.drop-pythonpath")
    assert not [a for a in other["actions"] if a["kind"] == "pip-install"], other["actions"]
    assert [(a["kind"], a.get("value")) for a in other["actions"]] == [("path-remove", str(libs))]


def test_a_constraint_forbids_the_pin_with_its_file_and_line(torch_no_cudnn, tmp_path):
    env, lib = torch_no_cudnn
    constraints = tmp_path / "constraints.txt"  # pip splits PIP_CONSTRAINT on spaces
    constraints.write_text("# team pins\nnumpy<3\nnvidia-cudnn-cu13<9.20\n")
    find_links = tmp_path / "wheels"
    find_links.mkdir()
    cenv = environ(tmp_path, CUDNN_PATH=str(lib.parent), PIP_CONSTRAINT=str(constraints),
                   PIP_FIND_LINKS=str(find_links), PIP_NO_INDEX="1")
    plan = dry_run(cenv, env.python)
    why = status(plan, "cudnn-not-on-search-path.framework-pin")
    assert why == f"{PIN} is forbidden by the pip constraint {constraints}:3: nvidia-cudnn-cu13<9.20"
    assert remedies(plan) == ["cudnn-not-on-search-path.copy-on-disk"]


def test_offline_keeps_local_indexes_and_installs_from_them(torch_no_cudnn, tmp_path):
    from tests.envkit.index import LocalIndex

    env, lib = torch_no_cudnn
    mirror = LocalIndex(tmp_path / "mirror")  # never started: only its folder is used
    mirror.add("nvidia-cudnn-cu13", "9.24.0.43", libs={"nvidia/cudnn/lib/libcudnn.so.9": "libcudnn.so.9"},
               tag="py3-none-manylinux_2_27_x86_64")
    local = mirror.folder_url()
    cenv = environ(tmp_path, PIP_INDEX_URL=local)
    plan = dry_run(cenv, env.python, "--offline")
    [step] = plan["actions"]
    assert step["kind"] == "pip-install" and step["available"] is True, plan
    assert f"--index-url {local}" in step["command"] and "--no-index" not in step["command"]
