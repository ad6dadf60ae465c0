"""Showing an evaluation's progress on the terminal (rich), or as plain lines.

Progress goes to stderr so that ``--format json`` / ``markdown`` output on
stdout stays machine-readable.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # rich loads only when progress is shown (not with --quiet)
    from rich.console import Console
    from rich.table import Table

__all__ = ["LineReporter", "RichReporter", "progress_reporter"]


class LineReporter:
    """One line per step: for logs and terminals that are not interactive."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._started = time.monotonic()

    def update(self, role: str, message: str) -> None:
        elapsed = time.monotonic() - self._started
        self._console.print(
            f"[dim]{elapsed:6.1f}s[/] [bold]{role:>4}[/] {message}", highlight=False
        )


class RichReporter:
    """A live table with a spinner and the current step of each side."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._steps: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._started = time.monotonic()

    def update(self, role: str, message: str) -> None:
        with self._lock:
            self._steps[role] = (message, time.monotonic())

    def render(self) -> Table:
        from rich.spinner import Spinner
        from rich.table import Table

        table = Table.grid(padding=(0, 1))
        now = time.monotonic()
        with self._lock:
            steps = sorted(self._steps.items())
        for role, (message, since) in steps:
            finished = message == "done" or message.startswith(("reused", "failed"))
            icon = (
                "[green]✓[/]"
                if message == "done" or message.startswith("reused")
                else ("[red]✗[/]" if message.startswith("failed") else Spinner("dots"))
            )
            table.add_row(
                icon, f"[bold]{role}[/]", message, "" if finished else f"[dim]{now - since:.1f}s[/]"
            )
        table.add_row("", "", f"[dim]elapsed {now - self._started:.1f}s[/]", "")
        return table


@contextmanager
def progress_reporter(*, quiet: bool = False) -> Iterator[LineReporter | RichReporter | None]:
    """A reporter suited to stderr: live on a terminal, lines otherwise."""
    if quiet:
        yield None
        return
    from rich.console import Console
    from rich.live import Live

    console = Console(stderr=True)
    if not (console.is_terminal and sys.stderr.isatty()):
        yield LineReporter(console)
        return
    reporter = RichReporter(console)
    with Live(
        get_renderable=reporter.render, console=console, refresh_per_second=8, transient=False
    ):
        yield reporter
