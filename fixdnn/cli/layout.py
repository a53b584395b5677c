"""Text layout for people: wrap lines for a terminal without ever breaking inside a name, and keep
loader chains to their deciding steps.

A path wider than the line is broken only after a ``/``, so every file and folder name stays whole and
can be copied. In a pipe nothing is wrapped at all: each line arrives whole, whatever ``COLUMNS`` says.
"""

from __future__ import annotations

# Loader step outcomes that say nothing about why a search failed: a place that simply did not have it.
_QUIET_OUTCOMES = (": absent", ": skipped")


def _pieces(token: str, room: int) -> list[str]:
    """``token`` cut after ``/`` into pieces of at most ``room`` characters where the names allow."""
    if len(token) <= room or "/" not in token:
        return [token]
    parts = [p + "/" for p in token.split("/")[:-1]] + [token.rsplit("/", 1)[1]]
    out = [""]
    for part in parts:
        if out[-1] and len(out[-1]) + len(part) > room:
            out.append("")
        out[-1] += part
    return [p for p in out if p]


def wrap(text: str, width: int | None, indent: int = 0, hang: int = 4) -> list[str]:
    """Lines of ``text`` (already indented by ``indent``) fitting ``width``; continuation lines are
    indented ``hang`` more. Breaks at spaces, and inside a path only after a ``/``. ``width`` None: one line."""
    if width is None or len(text) <= width:
        return [text]
    lead = " " * indent
    words = text[indent:].split(" ")
    lines: list[str] = []
    line = lead
    cont = " " * (indent + hang)
    for word in words:
        sep = "" if line.strip() == "" else " "
        if len(line) + len(sep) + len(word) <= width:
            line += sep + word
            continue
        room = width - len(cont)
        pieces = _pieces(word, max(room, 8))
        # the first piece may still fit after the current line's text
        if line.strip() and len(line) + 1 + len(pieces[0]) <= width:
            line += " " + pieces.pop(0)
        for piece in pieces:
            if line.strip():
                lines.append(line)
                line = cont
            line += piece
    lines.append(line)
    return lines


def concise_chain(chain: tuple[str, ...] | list[str]) -> list[str]:
    """The deciding lines of an evidence chain: every line that is not a loader step, the steps that
    found something or say why a candidate was refused, and one line counting the places that simply
    did not have the library. The full chain is in ``-v`` and in ``--json``."""
    out: list[str] = []
    hidden = 0

    def flush() -> None:
        nonlocal hidden
        if hidden:
            out.append(f"  ({hidden} more loader step{'s' if hidden != 1 else ''} found nothing there; "
                       "fixdnn -v shows each)")
            hidden = 0

    for line in chain:
        is_step = line.startswith("  ")
        if is_step and line.endswith(_QUIET_OUTCOMES) and "; " not in line:
            hidden += 1
            continue
        if not is_step:
            flush()
        out.append(line)
    flush()
    return out
