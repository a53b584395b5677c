"""Where each change of a plan lives, and which processes it reaches. Pure: action -> list of ``Reach``.

A repair that lives only in the activation scripts reaches shells that source them, nothing else. The
in-process hook (``fixdnn.shell.preload``) runs in every interpreter of the environment, activated or
not: plain ``env/bin/python``, IDE runs, cron and Slurm jobs, Jupyter kernels of this environment. A
kernelspec's ``env`` is set before the kernel's interpreter starts, so even loader variables reach it.
What a place cannot do is said, not hidden: ``reaches`` is then empty and ``note`` says why.
"""

from __future__ import annotations

from dataclasses import dataclass

LOADER_PREFIX = "LD_"
SHELLS = "shells that activate the environment (and what they start)"
EVERY_PYTHON = "every Python process of the environment: plain env/bin/python, IDE runs, cron/Slurm jobs, Jupyter kernels"


@dataclass(frozen=True)
class Reach:
    where: str  # activation | in-process | kernelspec
    reaches: str  # the processes, in words ("" when this place cannot carry the change)
    note: str = ""


def _loader(name: str | None) -> bool:
    return bool(name) and name.startswith(LOADER_PREFIX)


def reach(action, kernelspecs: int = 0) -> list[Reach]:
    """The places ``action`` lives in once applied (``kernelspecs``: how many run this environment)."""
    kind, name = action.kind, action.name
    if kind == "preload":
        return [Reach("in-process", EVERY_PYTHON,
                      "loaded by absolute path with RTLD_GLOBAL when a framework is first imported, so its "
                      "SONAME resolves to this copy")]
    if kind not in ("env-set", "env-unset", "path-prepend", "path-remove"):
        return []
    out = [Reach("activation", SHELLS)]
    if _loader(name):
        out.append(Reach("in-process", "",
                         f"{name} is read by the dynamic loader at process start; inside a running interpreter "
                         "it reaches only child processes (set for them when a framework is first imported)"))
    else:
        out.append(Reach("in-process", EVERY_PYTHON, "applied to os.environ before the framework is first imported"))
    if kernelspecs:
        if kind in ("env-set", "path-prepend"):
            out.append(Reach("kernelspec", f"{kernelspecs} Jupyter kernelspec(s) running this environment",
                             "in kernel.json 'env', set before the kernel's interpreter starts"))
        else:
            out.append(Reach("kernelspec", "",
                             "a kernelspec's env can only set values, not remove them; the in-process hook "
                             "carries this change into kernels" if not _loader(name) else
                             "a kernelspec's env can only set values; kernels started from it keep this entry"))
    return out


def unreached(action, kernelspecs: int = 0) -> list[str]:
    """Plain sentences for what ``action`` cannot reach (for the plan's notes)."""
    return [f"{action.describe()}: {r.where}: {r.note}" for r in reach(action, kernelspecs) if not r.reaches]


__all__ = ["EVERY_PYTHON", "SHELLS", "Reach", "reach", "unreached"]
