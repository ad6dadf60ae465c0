"""``modelci tokens``: bearer tokens of the HTTP API."""

from __future__ import annotations

from typing import Any

import click

from modelci.cli.base import (
    cli,
    current_settings,
    guarded,
    make_console,
)


@cli.group()
def tokens() -> None:
    """Bearer tokens of the jobs API (and of predict with MODELCI_PREDICT_AUTH=token).

    \b
    Examples:
      modelci tokens create ci-bot          # prints the token once
      modelci tokens list
      modelci tokens revoke ci-bot
    """


def _tokens_database() -> Any:
    from modelci.store.db import open_database

    return open_database(current_settings())


@tokens.command("create")
@click.argument("name")
@guarded
def tokens_create(name: str) -> None:
    """Create a token called NAME and print it (once: only its hash is kept).

    \b
    Examples:
      modelci tokens create ci-bot
      curl -H "Authorization: Bearer $(modelci tokens create dashboard)" localhost:8000/api/jobs
    """
    from modelci.service.tokens import create_token

    database = _tokens_database()
    try:
        token = create_token(database, name)
    finally:
        database.close()
    click.echo(token)
    make_console(stderr=True).print(
        f"token {name!r} created; it is not shown again. Send it as `Authorization: Bearer TOKEN`.",
        highlight=False,
    )


@tokens.command("list")
@guarded
def tokens_list() -> None:
    """The tokens' names, when each was created and last used (never the tokens).

    \b
    Examples:
      modelci tokens list
    """
    from rich.table import Table

    from modelci.service.tokens import list_tokens

    database = _tokens_database()
    try:
        found = list_tokens(database)
    finally:
        database.close()
    table = Table("name", "created", "last used")
    for info in found:
        last = info.last_used_at.strftime("%Y-%m-%d %H:%M") if info.last_used_at else "never"
        table.add_row(info.name, info.created_at.strftime("%Y-%m-%d %H:%M"), last)
    make_console().print(
        table if found else "no tokens: create one with `modelci tokens create NAME`"
    )


@tokens.command("revoke")
@click.argument("name")
@guarded
def tokens_revoke(name: str) -> None:
    """Revoke the token called NAME (requests with it fail within 5 seconds).

    \b
    Examples:
      modelci tokens revoke ci-bot
    """
    from modelci.service.tokens import revoke_token

    database = _tokens_database()
    try:
        revoke_token(database, name)
    finally:
        database.close()
    make_console().print(f"token {name!r} revoked", highlight=False)
