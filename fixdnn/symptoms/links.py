"""Symbol-level breakage between DNN / CUDA libraries that would load (see :mod:`fixdnn.facts.links`)."""

from __future__ import annotations

import shlex

from fixdnn.model.facts import Facts
from fixdnn.symptoms.registry import check


@check("FDN141", "library-symbol-missing", "error", "A library that would load needs a symbol version its provider lacks")
def library_symbol_missing(facts: Facts, compat):
    """Two CUDA / cuDNN libraries of different releases meet in one process: the requester was linked
    against a newer provider than the one that would load. glibc checks every binding when the library is
    loaded (Python loads extension modules and ``ctypes`` libraries with ``RTLD_NOW``), so the load fails
    with ``libcusparse.so.12: undefined symbol: __nvJitLinkGetErrorLogSize_12_9, version libnvJitLink.so.12``
    or ``version `libcudnn_graph.so.9.3' not found``; the framework then reports only "Unable to load
    cuSPARSE" or skips the GPU. fixdnn reads the requester's ``DT_VERNEED`` and undefined versioned symbols
    and looks each up in the provider's ``DT_VERDEF`` and symbol table, as the loader would. The fix is the
    provider's release that matches the requester (install both from one CUDA release)."""
    for link in facts.links:
        if not link.broken:
            continue
        what = (f"version {', '.join(link.missing_versions)}" if link.missing_versions else
                f"{link.missing_count} symbol(s), first {link.missing_symbols[0]}")
        fws = ", ".join(link.frameworks) or "a framework"
        yield library_symbol_missing.spec.make(
            f"{link.requester} needs {what} from {link.soname}, and {link.provider} does not define it: "
            f"loading {fws} fails",
            {"requester": link.requester, "soname": link.soname, "provider": link.provider,
             "frameworks": list(link.frameworks), "missing_versions": list(link.missing_versions),
             "missing_symbols": list(link.missing_symbols), "missing_count": link.missing_count,
             "requester_owner": link.requester_owner, "provider_owner": link.provider_owner,
             "provider_wheel": link.provider_owner.split(" ")[0] if link.provider_owner else None,
             "loader_message": link.loader_message()},
            chain=(f"{link.requester} ({link.requester_owner or 'no package owns it'}) DT_NEEDED {link.soname}",
                   f"the loader model maps {link.soname} → {link.provider} "
                   f"({link.provider_owner or 'no package owns it'})",
                   f"ld.so: {link.loader_message()}"),
            hint=(f"install the {link.provider_owner.split(' ')[0]} release that matches "
                  f"{link.requester_owner or link.requester} (one CUDA release for both)"
                  if link.provider_owner else "make both libraries come from one CUDA release"))


@check("FDN142", "library-link-unchecked", "warning", "A binding between two DNN / CUDA libraries could not be checked")
def library_link_unchecked(facts: Facts, compat):
    """fixdnn could not read the symbol versions of a library that would load (no section headers, an
    unreadable or damaged file), so it cannot say whether the binding holds. A verdict is a claim: this is
    not counted as healthy. Run ``LD_DEBUG=versions python -c 'import ctypes; ctypes.CDLL("<file>")'`` to see
    what the loader says."""
    for link in facts.links:
        if link.unknown is None:
            continue
        yield library_link_unchecked.spec.make(
            f"cannot check {link.requester} → {link.provider}: {link.unknown}",
            {"requester": link.requester, "soname": link.soname, "provider": link.provider, "reason": link.unknown},
            hint="see what the loader says: LD_DEBUG=versions python -c "
                 + shlex.quote(f"import ctypes; ctypes.CDLL({link.requester!r})"))
