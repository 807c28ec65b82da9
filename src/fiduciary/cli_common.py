"""What the CLI's command groups share: exit codes, consoles, the store and policy options,
the two ways a command fails (bad usage, or refused by the library), settings with the
options on top, and ISO 8601 time options.

Imports only Typer and Rich, so a group module stays cheap to import."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:
    from fiduciary.config import Settings

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


def settings(**overrides: Any) -> Settings:
    """FIDUCIARY_* settings with the command line's options on top (a None option keeps the
    setting); a variable that does not parse is a usage error."""
    from fiduciary.config import Settings

    try:
        s = Settings()
    except ValueError as exc:
        usage(f"bad FIDUCIARY_* setting: {exc}")
    return s.override(**overrides)


def store_settings(
    data_dir: Path | None = None,
    database_url: str | None = None,
    keys_database_url: str | None = None,
    keyring: Path | None = None,
    policy: Path | None = None,
) -> Settings:
    """``settings`` from the store options every group shares (``--keyring`` is the file)."""
    return settings(
        policy=policy,
        data_dir=data_dir,
        database_url=database_url,
        keys_database_url=keys_database_url,
        keyring_file=keyring,
    )


def moment(value: str | None, what: str) -> datetime | None:
    """An ISO 8601 date or date-time option: a date is midnight UTC, a time without a zone
    is UTC."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        usage(f"{what} {value!r}: not an ISO 8601 date or time (e.g. 2026-11-23 or 2026-11-23T09:30+01:00)")
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
