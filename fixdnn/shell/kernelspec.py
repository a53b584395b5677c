"""The repair's variables in a Jupyter kernelspec's ``env`` (kernel.json), rendered from env.toml.

jupyter_client sets a kernelspec's ``env`` before it starts the kernel's interpreter, so unlike the
in-process hook this reaches the dynamic loader too (``LD_LIBRARY_PATH``). A prepend is applied to the
kernelspec's own value only: the kernel's ``LD_LIBRARY_PATH`` becomes the repair's folders (plus the
kernelspec's own entries), not the launching shell's, whose stale entries are the usual cause of the
problem. (jupyter_client >= 7 could splice in ``${NAME}``, but an unset variable then stays a literal,
relative entry, which the loader would search in the notebook's folder.) A kernelspec can only *set*
values: an ``unset`` removes the variable from the kernelspec's own ``env`` (when it sets it) and is
otherwise left to the in-process hook. The values fixdnn replaced are kept in ``metadata.fixdnn.env`` (null: absent), so each
render starts again from the kernelspec's own values and the result never depends on how often it ran.
"""

from __future__ import annotations

import json

from fixdnn.shell.envfile import EnvFile, apply_ops

_OURS = ("metadata", "fixdnn", "env")


def render(text: str, env: EnvFile) -> str:
    """kernel.json ``text`` with ``env``'s changes; the same text when nothing changes. Raises ValueError."""
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("env", {}), dict):
        raise ValueError("kernel.json is not an object with an 'env' object")
    meta = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    saved = dict(((meta.get("fixdnn") or {}).get("env") or {}))
    own = dict(data.get("env") or {})
    for name, value in saved.items():  # back to the kernelspec's own values
        if value is None:
            own.pop(name, None)
        else:
            own[name] = value
    after = apply_ops(own, env.ops)
    changed = {k for k in set(own) | set(after) if own.get(k) != after.get(k)}
    new = dict(data)
    if after or "env" in data:
        new["env"] = after
    else:
        new.pop("env", None)
    new_meta = {k: v for k, v in meta.items() if k != "fixdnn"}
    if changed:
        new_meta["fixdnn"] = {"env": {k: own.get(k) for k in sorted(changed)},
                              "note": "set by fixdnn from etc/fixdnn/env.toml; undone by 'fixdnn rollback'"}
    if new_meta:
        new["metadata"] = new_meta
    else:
        new.pop("metadata", None)
    if new == data:
        return text
    return json.dumps(new, indent=1, ensure_ascii=False) + "\n"


__all__ = ["render"]
