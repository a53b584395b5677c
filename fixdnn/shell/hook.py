"""``fixdnn hook bash|zsh|fish``: print the snippet users ``eval`` from their rc file.

Per prompt the snippet only compares ``${VIRTUAL_ENV:-$CONDA_PREFIX}`` with the last value it saw (pure
shell, no process). When it changed, it undoes the layer it applied itself, then runs the new
environment's pre-rendered ``etc/fixdnn/env.sh|env.fish`` in ``hook`` mode, which does nothing when the
venv block or conda's activate.d already applied that environment.

It runs that script only when fixdnn wrote it for this user (:mod:`fixdnn.shell.trust`): an absolute
prefix, a regular file owned by the user or root that nobody else can write, and its digest recorded in
the user's own state folder (whose path is fixed into the snippet when ``fixdnn hook`` prints it). The
text that was checked is the text that runs (captured once, then evaluated). Anything else is skipped
with one line on stderr. It keeps ``$?``, chains existing
``PROMPT_COMMAND`` / ``precmd_functions`` / fish event handlers, and installs itself once.

Imports nothing heavy: ``fixdnn.cli.main`` routes here before loading typer or rich.
"""

from __future__ import annotations

import os
import sys

from fixdnn.shell.render import FISH_LIB, POSIX_LIB, quote_fish, quote_posix

_POSIX_SWITCH = r"""
_fixdnn_sum() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum; else shasum -a 256; fi | cut -c1-64
}
_fixdnn_hook_code() {
    local _fixdnn_f _fixdnn_real _fixdnn_rec
    case "$1" in /*) ;; *) return 1 ;; esac
    _fixdnn_f=$1/etc/fixdnn/env.sh
    [ -f "$_fixdnn_f" ] && [ ! -L "$_fixdnn_f" ] || return 1
    if [ ! -O "$_fixdnn_f" ] && [ -z "$(find "$_fixdnn_f" -prune -user 0 2>/dev/null)" ]; then
        echo "fixdnn: not running $_fixdnn_f: owned by someone else" >&2; return 1
    fi
    if [ -n "$(find "$_fixdnn_f" -prune \( -perm -020 -o -perm -002 \) 2>/dev/null)" ]; then
        echo "fixdnn: not running $_fixdnn_f: writable by others" >&2; return 1
    fi
    _fixdnn_code=$(cat -- "$_fixdnn_f") || return 1
    _fixdnn_real=$(cd -- "$1" 2>/dev/null && pwd -P) || return 1
    _fixdnn_rec=$_fixdnn_trust/$(printf '%s' "$_fixdnn_real" | _fixdnn_sum)
    if ! grep -qx "sh $(printf '%s' "$_fixdnn_code" | _fixdnn_sum)" "$_fixdnn_rec" 2>/dev/null; then
        echo "fixdnn: not running $_fixdnn_f: fixdnn did not write it for you (run fixdnn apply there)" >&2
        return 1
    fi
}
_fixdnn_hook_switch() {
    local _fixdnn_code
    if [ -n "${_fixdnn_hook_key:-}" ]; then _fixdnn_undo "$_fixdnn_hook_key"; fi
    _fixdnn_hook_key=
    _fixdnn_hook_last=$1
    if [ -n "$1" ] && _fixdnn_hook_code "$1"; then
        _fixdnn_mode=hook
        eval "$_fixdnn_code"
        _fixdnn_hook_key=$_fixdnn_applied
    fi
}
_fixdnn_hook() {
    local _fixdnn_status=$?
    if [ "${VIRTUAL_ENV:-${CONDA_PREFIX:-}}" != "${_fixdnn_hook_last:-}" ]; then
        _fixdnn_hook_switch "${VIRTUAL_ENV:-${CONDA_PREFIX:-}}"
    fi
    return $_fixdnn_status
}
"""

_BASH = r"""
if [[ ";${PROMPT_COMMAND[*]:-};" != *";_fixdnn_hook;"* ]]; then
    if [[ "$(declare -p PROMPT_COMMAND 2>&1)" == "declare -a"* ]]; then
        PROMPT_COMMAND=(_fixdnn_hook "${PROMPT_COMMAND[@]}")
    else
        PROMPT_COMMAND="_fixdnn_hook${PROMPT_COMMAND:+;$PROMPT_COMMAND}"
    fi
fi
"""

_ZSH = r"""
typeset -ag precmd_functions
if (( ! ${precmd_functions[(I)_fixdnn_hook]} )); then
    precmd_functions=(_fixdnn_hook $precmd_functions)
fi
"""

_FISH = r"""
function _fixdnn_sum
    if command -q sha256sum; sha256sum | string sub -l 64; else; shasum -a 256 | string sub -l 64; end
end
function _fixdnn_hook_code -a _fixdnn_cur
    string match -q -- '/*' "$_fixdnn_cur"; or return 1
    set -l f "$_fixdnn_cur/etc/fixdnn/env.fish"
    test -f "$f"; and not test -L "$f"; or return 1
    set -l root (find "$f" -prune -user 0 2>/dev/null)
    if not test -O "$f"; and test -z "$root"
        echo "fixdnn: not running $f: owned by someone else" >&2; return 1
    end
    set -l loose (find "$f" -prune \( -perm -020 -o -perm -002 \) 2>/dev/null)
    if test -n "$loose"
        echo "fixdnn: not running $f: writable by others" >&2; return 1
    end
    set -g _fixdnn_code (cat -- "$f" | string collect); or return 1
    set -l real (builtin realpath -- "$_fixdnn_cur" 2>/dev/null | string collect); or return 1
    set -l rec "$_fixdnn_trust/"(printf '%s' "$real" | _fixdnn_sum)
    if not grep -qx "fish "(printf '%s' "$_fixdnn_code" | _fixdnn_sum) "$rec" 2>/dev/null
        echo "fixdnn: not running $f: fixdnn did not write it for you (run fixdnn apply there)" >&2
        return 1
    end
end
function _fixdnn_hook_switch -a _fixdnn_cur
    if set -q _fixdnn_hook_key; and test -n "$_fixdnn_hook_key"
        _fixdnn_undo $_fixdnn_hook_key
    end
    set -g _fixdnn_hook_key
    set -g _fixdnn_hook_last $_fixdnn_cur
    if test -n "$_fixdnn_cur"; and _fixdnn_hook_code "$_fixdnn_cur"
        set -g _fixdnn_mode hook
        printf '%s\n' "$_fixdnn_code" | source
        set -g _fixdnn_hook_key $_fixdnn_applied
    end
    set -e -g _fixdnn_code
end
function _fixdnn_hook --on-event fish_prompt
    set -l _fixdnn_status $status
    set -l _fixdnn_cur "$VIRTUAL_ENV"
    test -n "$_fixdnn_cur"; or set _fixdnn_cur "$CONDA_PREFIX"
    if test "$_fixdnn_cur" != "$_fixdnn_hook_last"
        _fixdnn_hook_switch "$_fixdnn_cur"
    end
    return $_fixdnn_status
end
"""

SHELLS = ("bash", "zsh", "fish")


def snippet(shell: str) -> str:
    """The rc-file snippet for ``shell``; raises ``KeyError`` for an unknown shell."""
    head = f"# fixdnn shell hook ({shell}); generated by `fixdnn hook {shell}`\n"
    from fixdnn.base.statedir import HOOK_TRUST, state_dir  # not fixdnn.shell.trust: the hook stays light

    where = os.fspath(state_dir() / HOOK_TRUST).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if shell == "fish":
        return head + f"set -g _fixdnn_trust {quote_fish(where)}\n" + FISH_LIB + _FISH
    return (head + f"_fixdnn_trust={quote_posix(where)}\n" + POSIX_LIB + _POSIX_SWITCH
            + {"bash": _BASH, "zsh": _ZSH}[shell])


def main(argv: list[str]) -> int:
    """Entry point for ``fixdnn hook SHELL``: print the snippet, or a one-line error and exit 2."""
    if len(argv) != 1 or argv[0] not in SHELLS:
        got = " ".join(argv) or "nothing"
        sys.stderr.write(f"fixdnn hook: expected one of {', '.join(SHELLS)}, got {got!r}\n")
        return 2
    sys.stdout.write(snippet(argv[0]))
    return 0


__all__ = ["SHELLS", "main", "snippet"]
