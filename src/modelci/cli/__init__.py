"""The ``modelci`` command line: the edge where errors become exit codes.

Exit codes: 0 the gates pass, 1 a gated metric regressed, 2 an error (with a
message that says what went wrong and what to do). One module per group of
commands; each registers its commands on the root group from ``base``.
"""

from __future__ import annotations

from modelci.cli import evaluating, models, running, tokens
from modelci.cli.base import Duration, VersionNumber, cli

__all__ = ["Duration", "VersionNumber", "cli", "main"]

_COMMANDS = (evaluating, models, running, tokens)  # imported for their commands


def main() -> None:
    cli(prog_name="modelci")
