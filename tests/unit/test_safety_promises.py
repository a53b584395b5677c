"""The safety promises hold whatever a rule or an env.toml says: no LD_PRELOAD set, no empty or relative
search-path entry, binary wheels only, files written only inside the environment, user rules only from
an absolute config folder."""

from __future__ import annotations

import pytest

from fixdnn.knowledge.rules import Remedy, user_rules_dir
from fixdnn.model.actions import Action, Plan
from fixdnn.plan import context as context_mod
from fixdnn.plan.build import RenderError, build_actions
from fixdnn.repair.apply import ApplyError, Target, apply_plan
from fixdnn.shell.envfile import EnvFile, EnvFileError, EnvOp


@pytest.mark.parametrize("toml, why", [
    ('[[ops]]\nop = "set"\nname = "LD_LIBRARY_PATH"\nvalue = ":."\n', "empty entry"),
    ('[[ops]]\nop = "set"\nname = "LD_LIBRARY_PATH"\nvalue = "/a:lib"\n', "relative"),
    ('[[ops]]\nop = "set"\nname = "PYTHONPATH"\nvalue = "/a::/b"\n', "empty entry"),
    ('[[ops]]\nop = "set"\nname = "LD_PRELOAD"\nvalue = "/x/evil.so"\n', "never sets"),
    ('[[ops]]\nop = "path-prepend"\nname = "LD_PRELOAD"\nvalue = "/x"\n', "never sets"),
])
def test_env_toml_refuses_unsafe_values(toml, why):
    with pytest.raises(EnvFileError, match=why):
        EnvFile.loads("version = 1\n" + toml)


def test_removing_a_preload_stays_possible():
    EnvOp("unset", "LD_PRELOAD")
    EnvOp("path-remove", "LD_PRELOAD", "/opt/c/lib/libcudnn.so.9")
    EnvOp("set", "LD_LIBRARY_PATH", "/a/lib:/b/lib")


def _remedy(*actions: dict) -> Remedy:
    return Remedy("user.evil", "cudnn-missing", "because", {}, tuple(actions), ())


CTX = context_mod.from_dict({"prefix": "/envs/e", "python": "/envs/e/bin/python", "env_kind": "venv"})


@pytest.mark.parametrize("action, why", [
    ({"kind": "pip-install", "packages": ["x==1"], "pip_args": ["--no-binary=:all:"]}, "not allowed"),
    ({"kind": "pip-install", "packages": ["x==1"], "pip_args": ["--index-url=http://evil"]}, "not allowed"),
    ({"kind": "env-set", "name": "LD_PRELOAD", "value": "/x/evil.so"}, "never sets"),
    ({"kind": "env-set", "name": "LD_LIBRARY_PATH", "value": "/a::/b"}, "empty entry"),
])
def test_a_rule_cannot_plan_past_the_promises(action, why):
    with pytest.raises(RenderError, match=why):
        build_actions(_remedy(action), {}, CTX, "cudnn-missing")


def test_a_rule_can_still_write_inside_the_environment():
    """(A write outside is said in the plan's notes, see test_plan; apply refuses it unless confirmed.)"""
    [a] = build_actions(_remedy({"kind": "write-file", "path": "/envs/e/etc/x.conf", "content": "x"}), {}, CTX, "s")
    assert a.path == "/envs/e/etc/x.conf"


def test_apply_refuses_what_the_planner_would_have(tmp_path):
    prefix = tmp_path / "env"
    (prefix / "etc").mkdir(parents=True)
    (prefix / "pyvenv.cfg").write_text("home = /usr/bin\n")
    target = Target(str(prefix), None, ())
    for plan, why in ((Plan((Action("write-file", path=str(tmp_path / "outside"), content="x"),)), "outside"),
                      (Plan((Action("write-file", path=str(prefix / ".." / "outside"), content="x"),)), "outside"),
                      (Plan((Action("env-set", name="LD_PRELOAD", value="/x.so"),)), "never sets"),
                      (Plan((Action("pip-install", packages=("x==1",), pip_args=("--no-binary=:all:",)),)),
                       "refused")):
        with pytest.raises(ApplyError, match=why):
            apply_plan(plan, target)
    assert not (tmp_path / "outside").exists()


def test_relative_xdg_config_home_is_ignored(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "relcfg" / "fixdnn" / "rules").mkdir(parents=True)
    home = tmp_path / "home"
    assert user_rules_dir({"XDG_CONFIG_HOME": "relcfg", "HOME": str(home)}) is None
    (home / ".config" / "fixdnn" / "rules").mkdir(parents=True)
    assert user_rules_dir({"XDG_CONFIG_HOME": "relcfg", "HOME": str(home)}) == home / ".config" / "fixdnn" / "rules"
