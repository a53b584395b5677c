"""A verdict is a claim: facts that decide it and could not be read make the environment not healthy."""

from __future__ import annotations

from packaging.utils import canonicalize_name

from fixdnn.facts.integrity import load_patterns, relevant
from fixdnn.model.facts import Facts
from fixdnn.symptoms.registry import check


def _dist_name(folder: str) -> str:
    stem = folder.rsplit("/", 1)[-1].rsplit(".", 1)[0]  # torch-2.14.1+cu130.dist-info -> torch-2.14.1+cu130
    return canonicalize_name(stem.split("-", 1)[0])


def _decides(what: str, facts: Facts) -> bool:
    if what == "target interpreter":
        return True  # sys.path, and so every loader decision, was guessed from the files
    if what.startswith("distribution "):
        # the packages that can break a DNN process (rules/compat/integrity.toml): an unreadable one may hide
        # exactly the mismatch fixdnn looks for
        return relevant(_dist_name(what.removeprefix("distribution ")), load_patterns().pip)
    if what.startswith("sys.path entry "):
        entry = what.removeprefix("sys.path entry ")
        return entry in facts.target.site_dirs  # an unreadable site-packages hides every package in it
    return what.startswith("framework ") or what.endswith(("/version.py", "/build_info.py"))


@check("FDN701", "verdict-unknown", "error", "A fact that decides the verdict could not be read")
def verdict_unknown(facts: Facts, compat):
    """Something fixdnn must read to judge the environment could not be read: the target interpreter did
    not answer, a site-packages folder is unreadable (mode 000), the metadata of a framework or of a CUDA /
    cuDNN / MKL wheel is unreadable, not a regular file or has no ``Version:``. Without it a cuDNN
    mismatch could go unseen, so the environment is not called healthy: fix the file or its permissions,
    or run fixdnn as a user who can read it, and diagnose again."""
    decisive = [u for u in facts.unknowns if _decides(u.what, facts)]
    if not decisive:
        return
    first = decisive[0]
    more = f" (and {len(decisive) - 1} more)" if len(decisive) > 1 else ""
    yield verdict_unknown.spec.make(
        f"cannot tell whether this environment is healthy: {first.what}: {first.reason}{more}",
        {"unknowns": [{"what": u.what, "reason": u.reason} for u in decisive]},
        chain=tuple(f"{u.what}: {u.reason}" for u in decisive),
        hint="make these files readable (or run fixdnn as a user who can read them), then diagnose again")
