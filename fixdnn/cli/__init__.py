"""Command line: parse, call a command, hand its result to the renderer. Nothing else prints.

Start-up matters (``fixdnn hook`` runs in every new shell), so ``main`` serves ``hook`` before importing
typer, and every command imports its heavy modules inside its body.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["hook"]:
        from fixdnn.shell.hook import main as hook_main

        return hook_main(argv[1:])
    from fixdnn.cli.app import run

    return run(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
