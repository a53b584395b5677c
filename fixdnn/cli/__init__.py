"""Command line: parse, call a command, hand its result to the renderer. Nothing else prints.

Start-up matters (``fixdnn hook`` runs in every new shell), so ``main`` serves ``hook`` and
``--version`` before importing typer, and every command imports its heavy modules inside its body.
"""

from __future__ import annotations

import sys

_HELP = ("-h", "--help")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["hook"] and not any(a in _HELP for a in argv[1:]):
        from fixdnn.shell.hook import main as hook_main

        return hook_main(argv[1:])
    if argv in (["--version"], ["-V"]):
        from fixdnn import __version__

        sys.stdout.write(f"fixdnn {__version__}\n")
        return 0
    from fixdnn.cli.app import run

    return run(argv)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
