"""The command line: ``run.py`` calls ``main``, which parses the flags (``parser.py``) and dispatches to one thin
adapter per command (``commands.py``) over the Python API. Bad input is one ``error:`` line and exit 2; Ctrl-C
keeps every finished unit and exits 130."""

from __future__ import annotations

import sys

from competition.cli.parser import build_parser
from competition.utils.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, UserError


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        # Imported here, inside the handlers: torch and scikit-learn take seconds to import, and a Ctrl-C or a
        # bad installation meanwhile is reported like any other.
        from competition.cli import commands

        return getattr(commands, f"{args.command}_command")(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: every finished unit is kept; rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
