"""The tree shows the pipeline: each stage imports only stages below it, and nothing below the CLI
prints through rich. Every import counts, also those inside a function body."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "fixdnn"

# Bottom to top. A stage may import its own modules and any stage listed before it.
STAGES = ("base", "model", "target", "knowledge", "facts", "symptoms", "shell", "plan", "repair", "probes", "cli")
RANK = {name: n for n, name in enumerate(STAGES)}


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "fixdnn" and parts[1] in RANK else None


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            # "from fixdnn import plan" names a stage too
            if node.module == "fixdnn":
                out += [(node.lineno, f"fixdnn.{alias.name}") for alias in node.names]
    return out


def _module_files():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        yield path, ".".join(rel.parts)


def violations(files=None) -> list[str]:
    found = []
    for path, module in files if files is not None else _module_files():
        here = _stage(module)
        for line, target in _imports(path):
            there = _stage(target)
            if here is not None and there is not None and RANK[there] > RANK[here]:
                found.append(f"{path.name}:{line}: {here} imports {target} (a stage above it)")
            if target.split(".")[0] == "rich" and here != "cli":
                found.append(f"{path.name}:{line}: {module} imports rich (only the CLI prints)")
    return found


def test_every_module_lives_in_a_stage():
    flat = [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")]
    assert flat == [], f"modules outside the stage packages: {flat}"
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages <= set(STAGES), packages - set(STAGES)


def test_imports_run_down_the_pipeline():
    assert violations() == []


def test_the_check_sees_an_upward_and_a_lazy_import(tmp_path):
    up = tmp_path / "up.py"
    up.write_text("from fixdnn.plan.build import build_plan\n")
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from fixdnn import cli\n    import rich.console\n")
    found = violations([(up, "fixdnn.facts.up"), (lazy, "fixdnn.repair.lazy")])
    assert found == ["up.py:1: facts imports fixdnn.plan.build (a stage above it)",
                     "lazy.py:2: repair imports fixdnn.cli (a stage above it)",
                     "lazy.py:3: fixdnn.repair.lazy imports rich (only the CLI prints)"]
