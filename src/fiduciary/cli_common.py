"""What the CLI's command groups share: exit codes, consoles, the store and policy options,
and the two ways a command fails (bad usage, or refused by the library).

Imports only Typer and Rich, so a group module stays cheap to import."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

EXIT_REFUSED = 1
EXIT_USAGE = 2

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

PolicyOpt = Annotated[
    Path | None, typer.Option("--policy", help="The policy.yaml (env FIDUCIARY_POLICY).", show_default=False)
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (env FIDUCIARY_DATA_DIR).", show_default=False),
]
DatabaseOpt = Annotated[
    str | None, typer.Option("--database-url", help="Data store URL (env FIDUCIARY_DATABASE_URL).")
]
KeysDatabaseOpt = Annotated[
    str | None, typer.Option("--keys-database-url", help="Key store URL (env FIDUCIARY_KEYS_DATABASE_URL).")
]
ConnectionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--connection",
        help="A datastore's database: datastore=URL (repeatable; env FIDUCIARY_CONNECTIONS, JSON).",
    ),
]
ActorOpt = Annotated[str, typer.Option("--actor", help="Who acts (recorded in the audit trail).")]


def usage(message: str) -> NoReturn:
    err.print(f"[red]error[/red]: {message}", markup=True)
    raise typer.Exit(EXIT_USAGE)


def refused(message: str) -> NoReturn:
    err.print(f"[red]refused[/red]: {message}", markup=True)
    raise typer.Exit(EXIT_REFUSED)
