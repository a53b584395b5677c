"""Symptoms between frameworks: two frameworks in one environment that need incompatible cuDNN / CUDA."""

from __future__ import annotations

from itertools import combinations

from fixdnn.model.facts import Facts
from fixdnn.symptoms.registry import check


def _cudnn_need(fw):
    return next((n for n in fw.needs if n.library == "cudnn"), None)


@check("FDN131", "framework-pins-conflict", "error", "Two frameworks need incompatible cuDNN / CUDA")
def framework_pins_conflict(facts: Facts, compat):
    """Two frameworks in one environment need cuDNN of different majors, pin different exact versions of the
    same cuDNN wheel, or pin cuDNN wheels of different CUDA majors (which overwrite each other in
    ``nvidia/cudnn/lib``). No single install satisfies both."""
    gpu = [fw for fw in facts.frameworks if fw.gpu_build and _cudnn_need(fw)]
    for a, b in combinations(gpu, 2):
        na, nb = _cudnn_need(a), _cudnn_need(b)
        reason = None
        if na.major != nb.major:
            reason = f"cuDNN {na.major} vs cuDNN {nb.major}"
        elif na.wheel and nb.wheel and na.wheel != nb.wheel:
            reason = f"{na.pin or na.wheel} vs {nb.pin or nb.wheel} (both install into nvidia/cudnn/lib)"
        elif na.pin and nb.pin and na.pin != nb.pin:
            reason = f"{na.pin} vs {nb.pin}"
        if reason is None:
            continue
        yield framework_pins_conflict.spec.make(
            f"{a.name} {a.version} and {b.name} {b.version} cannot share one environment: {reason}",
            {"frameworks": [{"name": fw.name, "version": fw.version, "cudnn": {"major": n.major, "minimum": n.minimum,
                                                                             "pin": n.pin}}
                            for fw, n in ((a, na), (b, nb))], "reason": reason},
            chain=(f"{a.name}: {na.source}", f"{b.name}: {nb.source}"),
            hint="use versions whose cuDNN agree (see the compat tables) or separate environments")
