"""Commands for the web server and its access: ``serve``, API keys, console users.

The callables are plain Typer commands, so the main CLI can mount them where they read
best (``fiduciary serve``, ``fiduciary keys create|list|revoke``, ``fiduciary users ...``);
``app`` groups them for use on their own (``python -m fiduciary.cli_web``).

Keys and users need only the data store and the keyring (for the audit trail), not a
policy: they work before any policy is served.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

from fiduciary.cli_common import store_settings

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from fiduciary.audit import AuditLog
    from fiduciary.config import Settings

EXIT_INVALID = 1
EXIT_USAGE = 2

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Data directory (default: FIDUCIARY_DATA_DIR or ./fiduciary-data)."),
]
DatabaseUrl = Annotated[
    str | None, typer.Option("--database-url", help="Data store URL (default: FIDUCIARY_DATABASE_URL).")
]
KeysUrl = Annotated[
    str | None,
    typer.Option("--keys-database-url", help="Key store URL (default: FIDUCIARY_KEYS_DATABASE_URL)."),
]
KeyringFile = Annotated[
    Path | None, typer.Option("--keyring", help="Keyring file (default: DATA_DIR/keyring.json).")
]
Actor = Annotated[
    str,
    typer.Option("--actor", help="Who does this, for the audit trail (a staff handle, not an address)."),
]


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    err.print(f"[red]error[/red]: {message}")
    raise typer.Exit(code)


@dataclass
class _Stores:
    """What the key and user functions need (``fiduciary.web.auth.HasStores``)."""

    data: Engine
    audit: AuditLog


def _stores(s: Settings) -> _Stores:
    from fiduciary.audit import AuditLog
    from fiduciary.store import make_engine, upgrade
    from fiduciary.vault.keyring import Keyring, KeyringError

    try:
        if s.keyring:
            ring = Keyring.from_json(s.keyring, "FIDUCIARY_KEYRING")
        else:
            ring = Keyring.load_or_create(s.resolved_keyring_file())
    except KeyringError as exc:
        _fail(str(exc), EXIT_INVALID)
    data = make_engine(s.resolved_database_url())
    upgrade(data, "data")
    return _Stores(data, AuditLog(data, ring, checkpoint_every=s.checkpoint_every))


# ------------------------------------------------------------------------------ serve
def serve(
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy", help="The policy.yaml to serve (default: FIDUCIARY_POLICY).", show_default=False
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (about one per core).", min=1)] = 1,
    public_url: Annotated[
        str | None,
        typer.Option("--public-url", help="Where people reach the privacy center (links in mails)."),
    ] = None,
    access_log: Annotated[
        bool, typer.Option("--access-log/--no-access-log", help="Log each request.")
    ] = True,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    keys_database_url: KeysUrl = None,
    keyring: KeyringFile = None,
    retention_every: Annotated[
        str,
        typer.Option(
            "--retention-every",
            help="Sweep retention in the server this often ('off': leave it to Celery beat, "
            "which sweeps instead whenever FIDUCIARY_BROKER_URL is set, or to cron).",
        ),
    ] = "1 day",
    trusted_proxies: Annotated[
        str | None,
        typer.Option(
            "--trusted-proxies",
            envvar="FIDUCIARY_TRUSTED_PROXIES",
            help="Addresses (comma-separated, '*' for any) of the reverse proxies in front: their "
            "X-Forwarded-For and X-Forwarded-Proto are believed. Without it, the proxy's own address "
            "is every visitor's (rate limits, consent proofs) and cookies are not marked Secure.",
        ),
    ] = None,
) -> None:
    """Run the server: the JSON API (/api/v1, docs at /api/v1/docs), the privacy center
    and the console, with uvicorn.

    The stores are migrated and the policy published once here, before the workers start.
    """
    import uvicorn

    from fiduciary.core import Fiduciary
    from fiduciary.policy import PolicyError

    s = store_settings(data_dir, database_url, keys_database_url, keyring)
    sweep = retention_every.strip().lower() != "off"
    if sweep:
        from fiduciary.config import retention_interval

        try:
            retention_interval(retention_every)
        except ValueError as exc:
            _fail(f"--retention-every {exc}")
    path = policy or s.policy
    if path is None:
        _fail("no policy: pass --policy POLICY.yaml or set FIDUCIARY_POLICY")
    if not Path(path).is_file():
        _fail(f"no such file: {path}")
    try:
        # Once in this process: migrations, keyring creation and publishing the policy
        # version must not race between workers.
        Fiduciary.open(path, settings=s).close()
    except PolicyError as exc:
        _fail(str(exc), EXIT_INVALID)
    # The workers (separate processes) read the same settings from the environment.
    env = {
        "FIDUCIARY_POLICY": str(Path(path).resolve()),
        "FIDUCIARY_DATA_DIR": str(Path(s.data_dir).resolve()),
        "FIDUCIARY_DATABASE_URL": s.resolved_database_url(),
        "FIDUCIARY_KEYS_DATABASE_URL": s.resolved_keys_database_url(),
    }
    if not s.keyring:
        env["FIDUCIARY_KEYRING_FILE"] = str(s.resolved_keyring_file().resolve())
    if public_url:
        env["FIDUCIARY_PUBLIC_URL"] = public_url
    if sweep:
        env["FIDUCIARY_RETENTION_EVERY"] = retention_every
    else:
        os.environ.pop("FIDUCIARY_RETENTION_EVERY", None)
    os.environ.update(env)
    out.print(f"serving {path} on http://{host}:{port} ({workers} worker{'s' if workers != 1 else ''})")
    out.print(f"  API docs: http://{host}:{port}/api/v1/docs")
    uvicorn.run(
        "fiduciary.web.app:app_from_environment",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=access_log,
        log_level="info",
        # Forwarded headers only from the proxies named: anyone else could set them to
        # pick their own address, and with it a fresh rate-limit allowance.
        proxy_headers=trusted_proxies is not None,
        forwarded_allow_ips=trusted_proxies,
    )


# ------------------------------------------------------------------------------ API keys
def keys_create(
    name: Annotated[
        str, typer.Option("--name", help="What uses the key, e.g. crm-sync.", show_default=False)
    ],
    scope: Annotated[
        list[str],
        typer.Option("--scope", help="A scope the key carries (repeat for several).", show_default=False),
    ],
    actor: Actor = "cli",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    keyring: KeyringFile = None,
) -> None:
    """Create an API key and print it once: only its hash is stored.

    Scopes: subjects:read, subjects:write, consent:read, consent:write, decisions,
    requests:read, requests:write, audit:read, policy:read, metrics:read,
    disclosures:read, disclosures:write, breaches:read, breaches:write, admin.
    """
    from fiduciary.web.auth import AuthInputError, create_api_key

    stores = _stores(store_settings(data_dir, database_url, None, keyring))
    try:
        key_id, secret = create_api_key(stores, name, scope, actor=actor)
    except AuthInputError as exc:
        _fail(str(exc))
    finally:
        stores.data.dispose()
    err.print(f"created API key {key_id} ({name}: {', '.join(sorted(set(scope)))})")
    err.print("the key is shown this once; store it now:")
    print(secret)  # alone on stdout, so `KEY=$(fiduciary keys create ...)` works


def keys_list(
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    keyring: KeyringFile = None,
) -> None:
    """List API keys (ids, names, scopes; never the keys themselves)."""
    from fiduciary.web.auth import list_api_keys

    stores = _stores(store_settings(data_dir, database_url, None, keyring))
    try:
        keys = list_api_keys(stores, include_revoked=all_keys)
    finally:
        stores.data.dispose()
    if not keys:
        out.print("no API keys")
        return
    for k in keys:
        state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
        out.print(
            f"{k.id}  {k.name}  [{' '.join(sorted(k.scopes))}]  created {k.created_at:%Y-%m-%d} "
            f"by {k.created_by}  {state}",
            markup=False,
        )


def keys_revoke(
    key_id: Annotated[
        str, typer.Argument(help="The key's id (as `keys list` shows it).", show_default=False)
    ],
    actor: Actor = "cli",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    keyring: KeyringFile = None,
) -> None:
    """Revoke an API key. Running servers stop accepting it within a second."""
    from fiduciary.web.auth import UnknownApiKey, revoke_api_key

    stores = _stores(store_settings(data_dir, database_url, None, keyring))
    try:
        changed = revoke_api_key(stores, key_id, actor=actor)
    except UnknownApiKey as exc:
        _fail(str(exc), EXIT_INVALID)
    finally:
        stores.data.dispose()
    out.print(f"revoked {key_id}" if changed else f"{key_id} was revoked already")


# ------------------------------------------------------------------------------ console users
def users_create(
    username: Annotated[
        str, typer.Argument(help="A staff handle (not an email address).", show_default=False)
    ],
    password: Annotated[
        str,
        typer.Option(
            "--password",
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            envvar="FIDUCIARY_NEW_PASSWORD",
            help="At least 12 characters; prompted for when not given (or FIDUCIARY_NEW_PASSWORD).",
            show_default=False,
        ),
    ],
    role: Annotated[str, typer.Option("--role", help="viewer, operator or admin.")] = "viewer",
    actor: Actor = "cli",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    keyring: KeyringFile = None,
) -> None:
    """Create a console user (argon2id password hash) with a role."""
    from fiduciary.web.auth import AuthInputError, create_user

    stores = _stores(store_settings(data_dir, database_url, None, keyring))
    try:
        user = create_user(stores, username, password, role, actor=actor)
    except AuthInputError as exc:
        _fail(str(exc))
    finally:
        stores.data.dispose()
    out.print(f"created console user {user.username} ({user.role})")


def users_list(
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    keyring: KeyringFile = None,
) -> None:
    """List console users and their roles."""
    from fiduciary.web.auth import list_users

    stores = _stores(store_settings(data_dir, database_url, None, keyring))
    try:
        users = list_users(stores)
    finally:
        stores.data.dispose()
    if not users:
        out.print("no console users")
    for u in users:
        state = f"disabled {u.disabled_at:%Y-%m-%d}" if u.disabled_at else "active"
        out.print(
            f"{u.username}  {u.role}  created {u.created_at:%Y-%m-%d} by {u.created_by}  {state}",
            markup=False,
        )


def users_disable(
    username: Annotated[str, typer.Argument(help="The user to disable.", show_default=False)],
    actor: Actor = "cli",
    data_dir: DataDir = None,
    database_url: DatabaseUrl = None,
    keyring: KeyringFile = None,
) -> None:
    """Disable a console user (kept, so the audit trail's actors stay resolvable)."""
    from fiduciary.web.auth import UnknownUser, disable_user

    stores = _stores(store_settings(data_dir, database_url, None, keyring))
    try:
        changed = disable_user(stores, username, actor=actor)
    except UnknownUser as exc:
        _fail(str(exc), EXIT_INVALID)
    finally:
        stores.data.dispose()
    out.print(f"disabled {username}" if changed else f"{username} was disabled already")


# ------------------------------------------------------------------------------ grouping
keys_app = typer.Typer(help="API keys: create (shown once), list, revoke.", no_args_is_help=True)
keys_app.command("create")(keys_create)
keys_app.command("list")(keys_list)
keys_app.command("revoke")(keys_revoke)

users_app = typer.Typer(help="Console users (the privacy team) and their roles.", no_args_is_help=True)
users_app.command("create")(users_create)
users_app.command("list")(users_list)
users_app.command("disable")(users_disable)

app = typer.Typer(
    help="The web server and its access.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("serve")(serve)
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # pragma: no cover
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
