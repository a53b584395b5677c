"""Markers and wheel tags are the target's: its marker environment comes from its own interpreter, and a
wheel counts as available only when its tags fit the target (a win_amd64 wheel in a find-links folder
does not)."""

from __future__ import annotations

import sys
from dataclasses import replace

from packaging.markers import default_environment
from packaging.requirements import Requirement

from fixdnn.facts.frameworks import _cudnn_from_requires
from fixdnn.facts.markers import applies, marker_env, wheel_tags
from fixdnn.model.facts import Distribution, TargetInfo
from fixdnn.plan.availability import check_with_index, wheel_matches
from fixdnn.plan.context import Context, PipConfig
from fixdnn.target.host import Host
from fixdnn.target.interpreter import probe

LINUX_311 = TargetInfo("/env/bin/python", "3.11.9", "/env", "/usr", "venv", "linux", "x86_64",
                       markers={**default_environment(), "python_version": "3.11", "python_full_version": "3.11.9",
                                "sys_platform": "linux", "platform_machine": "x86_64", "platform_system": "Linux",
                                "implementation_name": "cpython"},
                       wheel_env={"soabi": "cpython-311-x86_64-linux-gnu", "glibc": "2.28"})


def test_the_probe_reports_the_interpreters_own_marker_environment():
    data, why = probe(Host(), sys.executable)
    assert why is None
    assert data["markers"] == default_environment()  # the same interpreter: packaging agrees key by key
    assert data["wheel_env"]["soabi"].startswith("cpython-")


def test_wheel_tags_fit_the_target_only():
    tags = wheel_tags(LINUX_311)
    fits = lambda fn: wheel_matches(fn, "torch", "2.4.0", tags)  # noqa: E731
    assert fits("torch-2.4.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl")
    assert fits("Torch-2.4.0-py3-none-any.whl")
    assert not fits("torch-2.4.0-cp311-cp311-win_amd64.whl")
    assert not fits("torch-2.4.0-cp312-cp312-manylinux_2_17_x86_64.whl")  # another Python
    assert not fits("torch-2.4.0-cp311-cp311-manylinux_2_34_x86_64.whl")  # needs a newer glibc than 2.28
    assert not fits("torch-2.4.0-cp311-cp311-manylinux_2_17_aarch64.whl")
    assert not fits("torch-2.4.1-py3-none-any.whl") and not fits("torch-2.4.0.tar.gz")
    assert wheel_matches("torch-2.4.0-cp311-cp311-win_amd64.whl", "torch", "2.4.0", None)  # tags unknown
    musl = replace(LINUX_311, wheel_env={"soabi": "cpython-311-x86_64-linux-musl", "glibc": ""})
    assert not wheel_matches("torch-2.4.0-cp311-cp311-manylinux_2_17_x86_64.whl", "torch", "2.4.0", wheel_tags(musl))


def test_a_windows_wheel_in_find_links_is_not_available(tmp_path):
    (tmp_path / "nvidia_cudnn_cu12-9.1.0.70-py3-none-win_amd64.whl").write_bytes(b"")
    ctx = Context(installer="none", offline=True, pip=PipConfig(find_links=(str(tmp_path),)),
                  wheel_tags=wheel_tags(LINUX_311))
    got = check_with_index(ctx, ["nvidia-cudnn-cu12==9.1.0.70"])
    assert got["nvidia-cudnn-cu12==9.1.0.70"][0] is False
    (tmp_path / "nvidia_cudnn_cu12-9.1.0.70-py3-none-manylinux2014_x86_64.whl").write_bytes(b"")
    assert check_with_index(ctx, ["nvidia-cudnn-cu12==9.1.0.70"])["nvidia-cudnn-cu12==9.1.0.70"][0] is True


def test_requires_dist_markers_are_evaluated_for_the_target_not_for_fixdnn():
    dist = Distribution("torch", "torch", "2.4.0", "/site", "/site/torch-2.4.0.dist-info", requires=(
        'nvidia-cudnn-cu12==9.1.0.70; python_version < "3.10"',
        'nvidia-cudnn-cu12==9.3.0.75; python_version >= "3.10" and sys_platform == "linux"',
    ))
    old = replace(LINUX_311, markers={**LINUX_311.markers, "python_version": "3.9"})
    assert _cudnn_from_requires(dist, marker_env(old)).pin == "nvidia-cudnn-cu12==9.1.0.70"
    assert _cudnn_from_requires(dist, marker_env(LINUX_311)).pin == "nvidia-cudnn-cu12==9.3.0.75"
    # a target read from its files: its Python version from the site dir, and Linux
    files = TargetInfo(None, "3.9", "/env", None, "files")
    assert marker_env(files)["python_version"] == "3.9" and marker_env(files)["sys_platform"] == "linux"
    assert _cudnn_from_requires(dist, marker_env(files)).pin == "nvidia-cudnn-cu12==9.1.0.70"


def test_a_pin_under_an_extra_counts_when_asked_and_odd_markers_do_not_hold():
    env = marker_env(LINUX_311)
    req = Requirement('nvidia-cudnn-cu12==9.1; extra == "and-cuda" and sys_platform == "linux"')
    assert applies(req.marker, env, any_extra=True) and not applies(req.marker, env)
    assert applies(req.marker, env, extra="and-cuda")
    win = Requirement('x==1; extra == "gpu" and sys_platform == "win32"')
    assert not applies(win.marker, env, any_extra=True)
