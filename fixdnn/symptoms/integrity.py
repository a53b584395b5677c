"""Integrity symptoms: installed files that no longer match what pip or conda recorded."""

from __future__ import annotations

from dataclasses import replace

from fixdnn.model.facts import Facts
from fixdnn.symptoms.registry import check

SHOWN = 10  # bad files listed in the evidence; "bad_count" has them all


def _line(bad) -> str:
    where = f" (a symlink to {bad.link})" if bad.link else ""
    if bad.problem == "missing":
        return f"{bad.path}: missing{where}"
    if bad.problem == "unreadable":
        return f"{bad.path}: unreadable: {bad.actual}{where}"
    return f"{bad.path}: {bad.problem} is {bad.actual}, recorded {bad.expected}{where}"


@check("FDN401", "install-corrupted", "error", "Installed files differ from what their installer recorded")
def install_corrupted(facts: Facts, compat):
    """A file of an installed package is missing, has another size, or another sha256 than the one pip
    wrote into the package's ``RECORD`` (or conda into ``conda-meta/<package>.json``) when it installed it.
    The package was damaged afterwards: an interrupted download or copy, a full disk, a hand edit, or a
    "fix" that replaced one library with a copy of or a symlink to another. The loader then fails with
    ``file too short``, ``invalid ELF header``, ``undefined symbol``, or loads the wrong code.

    By default only packages that can break a DNN process are checked (frameworks, ``nvidia-*`` and
    ``cuda-*`` wheels, MKL/OpenMP runtimes, NumPy/SciPy: ``rules/compat/integrity.toml``);
    ``fixdnn --verify-all`` checks every package and hashes every file (a default run hashes the libraries that would load and compares the other files by size). Reinstalling the same version restores the files.

    A console script in ``bin/`` whose only change is its ``#!`` line is not counted: relocating an
    environment (``venv-pack``, ``conda-pack``, a ``sed`` in a Dockerfile) rewrites that line in every script,
    and reinstalling torch or numpy would not be a repair."""
    for item in facts.integrity:
        # A console script whose first line was rewritten is a relocated environment, not a damaged one.
        relocated = sum(1 for b in item.bad if b.problem == "shebang")
        bad = [b for b in item.bad if b.problem != "shebang"]
        bad_count = item.bad_count - relocated
        if bad_count <= 0:
            continue
        item = replace(item, bad=tuple(bad), bad_count=bad_count)
        shown = item.bad[:SHOWN]
        kinds = sorted({b.problem for b in item.bad})
        who = "pip" if item.source == "pip" else "conda"
        if item.source == "pip":
            hint = f"reinstall the same version: pip install --force-reinstall --no-deps {item.distribution}=={item.version}"
        else:
            hint = f"reinstall the same version: conda install --force-reinstall {item.distribution}={item.version}"
        yield install_corrupted.spec.make(
            f"{item.bad_count} of {item.checked} files of {item.distribution} {item.version} differ from what "
            f"{who} recorded ({', '.join(kinds)})",
            {
                "distribution": item.distribution,
                "version": item.version,
                "source": item.source,
                "record": item.record,
                "checked": item.checked,
                "bad_count": item.bad_count,
                "bad_files": [{"path": b.path, "problem": b.problem, "expected": b.expected, "actual": b.actual,
                               "link": b.link} for b in shown],
                "not_shown": item.bad_count - len(shown),
            },
            chain=[f"{item.record} records {item.checked} files with a size or hash"]
            + [_line(b) for b in shown]
            + ([f"... and {item.bad_count - len(shown)} more"] if item.bad_count > len(shown) else []),
            hint=hint,
        )
