"""`fiduciary demo`: build the demo directory (``fiduciary.demo``) and serve it.

    fiduciary demo                         # ./fiduciary-demo, http://127.0.0.1:8000
    fiduciary demo --port 8001 --subjects 5000 --reset
    fiduciary demo --no-serve --dir /tmp/demo

Only Typer and Rich are imported here: the main CLI mounts this command without slowing
`fiduciary policy check`; the runtime is imported when the command runs.
"""

from __future__ import annotations

import errno
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from fiduciary.core import Fiduciary
    from fiduciary.demo import Demo

EXIT_USAGE = 2

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    err.print(f"[red]error[/red]: {message}")
    raise typer.Exit(code)


def check_port(host: str, port: int) -> str | None:
    """Why the server could not listen on ``host:port`` (None: it can). Bound with
    SO_REUSEADDR as uvicorn binds, so a port only in TIME_WAIT counts as free."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"--host {host!r} is not an address this machine can listen on ({exc.strerror})"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is already in use (another server, or a demo still "
                    f"running?); choose a free port with --port, e.g. `fiduciary demo --port {port + 1}`"
                )
            if exc.errno == errno.EACCES:
                return f"not allowed to listen on port {port}; choose a port above 1023 with --port"
            return f"cannot listen on {host}:{port} ({exc.strerror}); choose another --host or --port"
    return None


def _base_url(host: str, port: int) -> str:
    # A wildcard address is where the server listens, not where a browser goes.
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def _show(demo: Demo, fid: Fiduciary, base: str, serving: bool) -> None:
    from fiduciary.demo import request_states

    c = demo.credentials
    where = "built" if demo.built_now else "reusing the demo built"
    out.print(
        f"\n[bold]Fiduciary demo[/bold]: put.io (examples/filelocker), {demo.subjects:,} generated "
        f"people, SQLite in {escape(str(demo.directory))}",
    )
    out.print(f"  {where} {demo.built_at:%Y-%m-%d %H:%M UTC} ({demo.build_seconds:.1f} s)")
    for note in demo.notes:
        out.print(f"  [yellow]note[/yellow]: {note}")
    lead = "" if serving else "once served: "
    out.print(f"\n  {lead}privacy center  {base}/")
    login = f"user [bold]{c.username}[/bold]  password [bold]{c.password}[/bold]"
    out.print(f"  console         {base}/console   {login}")
    out.print(f"  API docs        {base}/api/v1/docs")
    out.print(f"  API key         {c.api_key}   (scope admin)")
    out.print(f'    try: curl -H "Authorization: Bearer {c.api_key}" {base}/api/v1/requests', markup=False)
    out.print(
        f"  outbox          {escape(str(demo.outbox))}/  ({demo.outbox_count()} mails, .eml: nothing is sent)"
    )
    states = [
        label.replace("_", " ")
        + ("" if label == status else f" ({status})")
        + (" OVERDUE" if overdue and label != "overdue" else "")
        for label, status, overdue in request_states(fid, demo)
    ]
    out.print(f"  requests        {', '.join(states)}")
    out.print(
        f"\n  [yellow]A demo[/yellow]: generated people, and the password and key above are kept in clear "
        f"in {escape(str(demo.directory / 'credentials.json'))}. Never put real data here."
    )
    if serving:
        out.print("  Ctrl+C stops the server; `fiduciary demo` again resumes, `--reset` starts over.\n")
    else:
        out.print(f"  Serve it with: fiduciary demo --dir {demo.directory}\n", markup=False)


def demo(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="The demo directory (default: ./fiduciary-demo).", show_default=False),
    ] = None,
    port: Annotated[int, typer.Option(help="Port to serve on.", min=1, max=65535)] = 8000,
    host: Annotated[str, typer.Option(help="Address to serve on.")] = "127.0.0.1",
    subjects: Annotated[
        int | None,
        typer.Option(
            "--subjects",
            help="People to generate for a new demo (default 2,000).",
            min=20,
            max=1_000_000,
            show_default=False,
        ),
    ] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Delete the demo directory's data and rebuild it.")
    ] = False,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Serve it once built.")] = True,
) -> None:
    """A working Fiduciary in one command: SQLite, put.io's example app database with
    generated people, rights requests in every state, mail in an outbox; then the privacy
    center, the console and the API on http://127.0.0.1:8000.

    The first run builds the demo directory (a few seconds); later runs reuse it.
    """
    from fiduciary.core import Fiduciary
    from fiduciary.demo import DEFAULT_DIR, DemoError, build_demo

    if serve:
        # Before building: a busy port should cost the user no wait.
        problem = check_port(host, port)
        if problem:
            _fail(problem)
    base = _base_url(host, port)
    started = time.perf_counter()

    def progress(message: str) -> None:
        err.print(f"  {time.perf_counter() - started:5.1f} s  {message}")

    try:
        d = build_demo(
            directory or DEFAULT_DIR, subjects=subjects, reset=reset, public_url=base, progress=progress
        )
    except DemoError as exc:
        _fail(str(exc))
    except FileNotFoundError as exc:  # the examples live in a source checkout
        _fail(str(exc))
    s = d.settings()
    fid = Fiduciary.open(d.policy, settings=s)
    _show(d, fid, base, serve)
    if not serve:
        fid.close()
        return

    import uvicorn

    from fiduciary.web.app import create_app, tune_process

    app = create_app(fid, settings=s, public_url=base, owns_fiduciary=True)
    tune_process()
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, proxy_headers=False)
