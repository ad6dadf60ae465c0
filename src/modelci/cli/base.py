"""What every command shares: the root group, options, settings, and the guard
that turns modelci's errors into messages and exit codes (never a traceback).
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from modelci.errors import EXIT_ERROR, EXIT_OK, ModelCIError
from modelci.settings import Settings, get_settings

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])


# Console width when stdout is not a terminal: tables keep whole names and numbers.
WIDE = 400


def make_console(**options: Any) -> Console:
    """A rich Console. rich is imported when something is printed, not at start: an
    evaluation's training waits for the imports, and ``--format json`` needs none."""
    from rich.console import Console

    return Console(**options)


def escape(text: str) -> str:
    """``text`` with rich's markup escaped (see make_console)."""
    from rich.markup import escape

    return escape(text)


def fail(message: str, code: int = EXIT_ERROR) -> None:
    # soft_wrap: a message names paths and commands to copy; the terminal wraps
    # lines itself, and a log or CI must get them whole, not cut at 80 columns.
    make_console(stderr=True, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}", highlight=False
    )
    sys.exit(code)


def wide_console() -> Console:
    """stdout: a terminal's width, else wide enough that no name or number is cut."""
    console = make_console()
    return console if console.is_terminal else make_console(width=WIDE, soft_wrap=True)


def current_settings() -> Settings:
    """The settings, with the global --data-dir on top (a bad MODELCI_* value raises
    ConfigError, which guarded prints in one line)."""
    context = click.get_current_context(silent=True)
    data_dir = context.find_root().params.get("data_dir") if context else None
    return get_settings(**({"data_dir": data_dir} if data_dir else {}))


def guarded(func: F) -> F:
    """Turn modelci's errors into messages and exit codes; never show a traceback."""

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ModelCIError as exc:
            fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            fail("interrupted", 130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception:
            with tempfile.NamedTemporaryFile(
                "w", prefix="modelci-crash-", suffix=".txt", delete=False
            ) as handle:
                traceback.print_exc(file=handle)
            fail(f"internal error in modelci; please report it with the details in {handle.name}")
        return None

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper  # type: ignore[return-value]


class Duration(click.ParamType[float]):
    """Seconds, or 90s / 10m / 1h: what modelci.yaml's limits.timeout takes."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> float:
        from pydantic import ValidationError

        from modelci.runner.config import LimitsConfig

        try:
            return float(LimitsConfig.model_validate({"timeout": value}).timeout)
        except ValidationError:
            self.fail(
                f"{value!r} is not a duration: use seconds (600) or 90s, 10m, 1h "
                "(more than 0, at most 24h)",
                param,
                ctx,
            )


class VersionNumber(click.ParamType[int]):
    """A model version: 2 or v2, as `models show` prints it."""

    name = "version"

    def convert(self, value: Any, param: click.Parameter | None, ctx: Any) -> int:
        text = str(value).strip()
        number = text[1:] if text[:1] in ("v", "V") else text
        if not number.isdigit() or int(number) < 1:
            self.fail(f"{value!r} is not a version: give its number, e.g. 2 or v2", param, ctx)
        return int(number)


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, invoke_without_command=True)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where modelci keeps mirrors, environments, logs and the embedded database "
    "(default: MODELCI_DATA_DIR, else ~/.local/share/modelci, /var/lib/modelci as root).",
)
@click.version_option(package_name="modelci")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path | None) -> None:
    """modelci: CI, delivery and training for the models in your git repositories.

    \b
    Examples:
      modelci demo                                   # the whole loop on a sample model
      modelci evaluate . --base main --head my-branch
      modelci deliver . --ref main
      modelci models list
      modelci --data-dir /srv/modelci doctor --offline
    """
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(EXIT_OK)


format_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "markdown", "json"]),
    default="table",
    show_default=True,
    help="How to print the comparison.",
)


unsafe_option = click.option(
    "--unsafe-no-sandbox",
    "unsafe",
    is_flag=True,
    help="Run repository code without bubblewrap isolation (trusted code only).",
)


quiet_option = click.option("--quiet", "-q", is_flag=True, help="Do not show progress.")


def actor_name(actor: str | None) -> str:
    import getpass

    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


json_or_table_option = click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="A table for people, or JSON for scripts.",
)
