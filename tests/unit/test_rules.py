"""The rule files: shipped rules load, every remedy's example cases hold, every symptom has a remedy, every
error signature matches its real examples, and each kind of malformed file gives one line with file:line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fixdnn.knowledge import compat as compat_mod
from fixdnn.knowledge.rules import RulesError
from fixdnn.plan import context as context_mod
from fixdnn.plan.build import plan
from fixdnn.symptoms.registry import Symptom, load_all, load_rules

RULES = load_rules(include_user=False)
COMPAT = compat_mod.load()
CASES = [(r, n, c) for r in RULES.remedies for n, c in enumerate(r.cases)]


def test_every_symptom_has_a_remedy():
    missing = sorted(set(load_all()) - {r.symptom for r in RULES.remedies})
    assert missing == [], f"symptoms without remedies: {missing}"


def test_every_remedy_has_cases():
    assert all(r.cases for r in RULES.remedies)
    assert len(CASES) >= len(RULES.remedies)


@pytest.mark.parametrize("remedy,n,case", CASES, ids=[f"{r.id}#{n}" for r, n, _ in CASES])
def test_remedy_case(remedy, n, case):
    """The case's evidence and context, planned with every remedy of the symptom, give the expected actions
    — and, when any are expected, from this remedy (so the preference order is tested too)."""
    ctx = context_mod.from_dict(case.context)
    result = plan([Symptom("FDN000", remedy.symptom, "error", "case", case.evidence)], ctx, RULES, COMPAT)
    if not case.expect:
        assert result.actions == () and result.unfixed == (remedy.symptom,)
        return
    assert [a.remedy for a in result.actions] == [remedy.id] * len(case.expect), result.notes
    for action, want in zip(result.actions, case.expect):
        for key, value in want.items():
            got = getattr(action, key)
            got = list(got) if isinstance(got, tuple) else got
            if key == "pip_args":
                got = got[:len(value)]
            assert got == value, f"{remedy.id} case {n}: {key} = {got!r}, expected {value!r}"
        assert action.fixes == (remedy.symptom,)
        assert action.reason and "{" not in action.reason.split("; not ")[0]


def test_error_catalog_covers_e01_to_e40_and_examples_match():
    ids = [e.id for e in RULES.errors]
    assert set(ids) >= {f"E{n:02d}" for n in range(1, 41)}
    known = set(load_all())
    for e in RULES.errors:
        assert e.examples and e.frameworks
        assert set(e.symptoms) <= known
        for example in e.examples:
            assert e.matches(example), f"{e.id}: {example!r}"


QUOTES = Path(__file__).resolve().parents[1] / "data" / "error_quotes.md"


def _quoted_sections() -> dict[str, str]:
    """{error id: its section of tests/data/error_quotes.md}: the messages as users reported them."""
    parts = re.split(r"^## (E\d+)\b.*$", QUOTES.read_text(encoding="utf-8"), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_error_examples_are_verbatim_quotes_of_their_own_error():
    def norm(t: str) -> str:
        return re.sub(r"\s+", " ", t.replace("\\n", "\n").replace("\\t", "\t"))

    sections = _quoted_sections()
    assert set(sections) >= {e.id for e in RULES.errors}, "every error id needs its quoted section"
    # E06: the catalog writes the message as an alternation (NOT_INITIALIZED|INTERNAL_ERROR); its examples
    # are the two expansions.
    for e in RULES.errors:
        quoted = norm(sections[e.id])
        for example in e.examples:
            if e.id == "E06":
                assert norm(example.replace("NOT_INITIALIZED", "").replace("INTERNAL_ERROR", "")) in quoted
                continue
            assert norm(example) in quoted, f"{e.id}: not a verbatim quote: {example!r}"


# -- malformed files -----------------------------------------------------------------------------------
GOOD = '''[[remedy]]
id = "x.one"
symptom = "cudnn-missing"
reason = "because"
actions = [{ kind = "manual", text = "do {framework}" }]

[[remedy.case]]
evidence = { framework = "torch" }
expect = [{ kind = "manual" }]
'''


def _layer(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    d = tmp_path / "layer"
    (d / "remedies").mkdir(parents=True, exist_ok=True)
    (d / "remedies" / name).write_text(text)
    return d


BAD = {
    "bad-toml": ("[[remedy]]\nid = 'x'\nsymptom = \n", 3, r"invalid TOML"),
    "unknown-action": (GOOD.replace('kind = "manual", text = "do {framework}"', 'kind = "symlink", text = "x"'), 5,
                       r"unknown action kind 'symlink'"),
    "unknown-condition": (GOOD.replace('reason = "because"', 'reason = "because"\nwhen = { gpu = true }'), 5,
                          r"unknown condition 'gpu'"),
    "missing-placeholder": (GOOD.replace("do {framework}", "do {nonesuch.path}"), 5,
                            r"placeholder \{nonesuch.path\} names no evidence key"),
    "duplicate-id": (GOOD + GOOD.replace("[[remedy]]\n", "\n[[remedy]]\n", 1), 11, r"duplicate remedy id 'x.one'"),
    "folklore-kmp": (GOOD.replace('kind = "manual", text = "do {framework}"',
                                  'kind = "env-set", name = "KMP_DUPLICATE_LIB_OK", value = "TRUE"'), 5,
                     r"refused folklore fix: setting KMP_DUPLICATE_LIB_OK"),
    "folklore-skip-check": (GOOD.replace('kind = "manual", text = "do {framework}"',
                                         'kind = "env-set", name = "PYTORCH_SKIP_CUDNN_COMPATIBILITY_CHECK", value = "1"'),
                            5, r"refused folklore fix"),
    "folklore-jax": (GOOD.replace('kind = "manual", text = "do {framework}"',
                                  'kind = "env-set", name = "JAX_SKIP_CUDA_CONSTRAINTS_CHECK", value = "1"'),
                     5, r"refused folklore fix"),
    "folklore-symlink": (GOOD.replace("do {framework}", "ln -s /usr/lib/libcuda.so.1 /usr/lib/libcudnn.so.8"), 5,
                         r"refused folklore fix: symlinking libcuda"),
    "folklore-fake-lib": (GOOD.replace('kind = "manual", text = "do {framework}"',
                                       'kind = "write-file", path = "/env/lib/libcudnn.so.9", content = "x"'), 5,
                          r"refused folklore fix: writing a file named like libcuda/libcudnn"),
    "not-exact-pin": (GOOD.replace('kind = "manual", text = "do {framework}"',
                                   'kind = "pip-install", packages = ["nvidia-cudnn-cu12>=9.3"]'), 5,
                      r"exact pins only"),
    "relative-path": (GOOD.replace('kind = "manual", text = "do {framework}"',
                                   'kind = "path-prepend", name = "LD_LIBRARY_PATH", value = "lib"'), 5,
                      r"absolute directory"),
    "no-cases": ("\n".join(GOOD.splitlines()[:5]) + "\n", 1, r"needs example cases"),
    "unknown-symptom": (GOOD.replace('symptom = "cudnn-missing"', 'symptom = "cudnn-gremlins"'), 3,
                        r"unknown symptom 'cudnn-gremlins'"),
}


@pytest.mark.parametrize("label", sorted(BAD))
def test_malformed_rule_file_gives_one_line_with_file_and_line(tmp_path, label):
    text, line, pattern = BAD[label]
    layer = _layer(tmp_path, text)
    with pytest.raises(RulesError) as err:
        load_rules([layer], include_user=False)
    msg = str(err.value)
    assert "\n" not in msg
    path = layer / "remedies" / "bad.toml"
    assert msg.startswith(f"{path}:{line}: "), msg
    assert re.search(pattern, msg), msg


def test_duplicate_error_id_and_bad_regex(tmp_path):
    d = tmp_path / "layer"
    d.mkdir()
    row = "[[error]]\nid = 'E99'\nframeworks = ['torch']\nregex = 'x'\nsymptoms = []\nexamples = ['x']\n"
    (d / "errors.toml").write_text(row + "\n" + row)
    with pytest.raises(RulesError, match=r"errors.toml:8: duplicate error id 'E99'"):
        load_rules([d], include_user=False)
    (d / "errors.toml").write_text(row.replace("regex = 'x'", "regex = '(unclosed'"))
    with pytest.raises(RulesError, match=r"errors.toml:4: regex does not compile"):
        load_rules([d], include_user=False)
    (d / "errors.toml").write_text(row + "harmless = 'sometimes'\n")
    with pytest.raises(RulesError, match=r"errors.toml:7: harmless must be one of 'always', 'without-driver'"):
        load_rules([d], include_user=False)


def test_noise_is_marked_in_the_catalog_not_guessed():
    from fixdnn.probes.explain import is_harmless

    class NoDriver:
        driver = None

    errors = {e.id: e for e in load_rules(include_user=False).errors}
    assert {i for i, e in errors.items() if is_harmless(e)} == {"E10", "E11", "E12", "E13"}
    assert is_harmless(errors["E08"], NoDriver()) and not is_harmless(errors["E08"])
    assert not is_harmless(errors["E01"], NoDriver())


def test_user_rules_override_by_id_and_xdg_fallback(tmp_path):
    override = GOOD.replace('id = "x.one"', 'id = "cudnn-missing.framework-pin"').replace("do {framework}", "mine")
    xdg = tmp_path / "xdg"
    _layer(xdg / "fixdnn" / "rules", override, "mine.toml")
    (xdg / "fixdnn" / "rules" / "layer").rename(xdg / "fixdnn" / "rules2")
    import shutil

    shutil.rmtree(xdg / "fixdnn" / "rules")
    (xdg / "fixdnn" / "rules2").rename(xdg / "fixdnn" / "rules")
    loaded = load_rules(environ={"XDG_CONFIG_HOME": str(xdg), "HOME": str(tmp_path)})
    mine = [r for r in loaded.remedies if r.id == "cudnn-missing.framework-pin"]
    assert len(mine) == 1 and mine[0].actions[0]["text"] == "mine"
    assert loaded.for_symptom("cudnn-missing")[0].id == "cudnn-missing.framework-pin"  # keeps its place
    # Empty XDG_CONFIG_HOME is ignored: ~/.config is used.
    home = tmp_path / "home"
    (home / ".config").mkdir(parents=True)
    (xdg / "fixdnn").rename(home / ".config" / "fixdnn")
    loaded = load_rules(environ={"XDG_CONFIG_HOME": "", "HOME": str(home)})
    assert next(r for r in loaded.remedies if r.id == "cudnn-missing.framework-pin").actions[0]["text"] == "mine"
    # --rules wins over the user's config.
    cli = _layer(tmp_path / "cli", override.replace('"mine"', '"cli"'), "cli.toml")
    loaded = load_rules([cli], environ={"XDG_CONFIG_HOME": "", "HOME": str(home)})
    assert next(r for r in loaded.remedies if r.id == "cudnn-missing.framework-pin").actions[0]["text"] == "cli"


def test_cli_refuses_to_plan_from_a_bad_rule_file(tmp_path):
    layer = _layer(tmp_path, BAD["unknown-action"][0])
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
           "PIP_CONFIG_FILE": "/dev/null"}
    proc = subprocess.run([sys.executable, "-m", "fixdnn", "--python", sys.executable, "--dry-run",
                           "--rules", str(layer)], capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{layer}/remedies/bad.toml:5: unknown action kind 'symlink'" in lines[0]
    assert "Traceback" not in proc.stderr
