#!/usr/bin/env python3
"""Command line of the toolkit: ``python run.py COMMAND --help`` (cv, tune, submit, score, report, runs)."""

import sys

from competition.cli import main

if __name__ == "__main__":
    sys.exit(main())
