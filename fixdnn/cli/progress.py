"""Progress for a person at a terminal: a rich status line on stderr while a long step runs.

Shown only when stderr is a terminal, and never with ``--json`` or ``-q``: pipes, logs and scripts get
nothing from here (stdout stays the report alone).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


def wanted(opts: dict) -> bool:
    return not opts.get("json") and not opts.get("quiet") and sys.stderr is not None and sys.stderr.isatty()


class _Quiet:
    def update(self, text: str) -> None:
        pass

    def log(self, text: str) -> None:
        sys.stderr.write(f"fixdnn: {text}\n")
        sys.stderr.flush()


class _Shown:
    def __init__(self, console, live):
        self._console, self._live = console, live

    def update(self, text: str) -> None:
        from rich.markup import escape

        self._live.update(escape(text))

    def log(self, text: str) -> None:
        """A line that stays (printed above the spinner)."""
        from rich.markup import escape

        self._console.print(f"fixdnn: {escape(text)}")


@contextmanager
def status(opts: dict, text: str) -> Iterator[_Quiet | _Shown]:
    """A spinner with ``text`` for the duration of the block; yields an object with ``update(text)``
    (change the spinner's text) and ``log(text)`` (a line that stays: above the spinner, or on stderr)."""
    if not wanted(opts):
        yield _Quiet()
        return
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False)
    with console.status(escape(text)) as live:
        yield _Shown(console, live)
