"""``stepline server`` (serve the store over HTTP) and ``stepline server token``."""

from __future__ import annotations

import json
import socket
import sys
from typing import TYPE_CHECKING, Annotated

import typer

from stepline.cli.render import fmt_time, stdout_console
from stepline.core.errors import ConfigError

if TYPE_CHECKING:
    from stepline.backend.sql.store import SqlBackend

server_app = typer.Typer(
    help="Serve the store over a REST API (`stepline server`), and manage its API tokens "
    "(`stepline server token`).",
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
token_app = typer.Typer(
    help="Create, list and revoke the tokens the server accepts. Once a token exists, every "
    "request needs one.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
server_app.add_typer(token_app, name="token")


def _store(upgrade: bool | None = None) -> SqlBackend:
    from stepline.backend.sql.store import SqlBackend
    from stepline.core.config import load_config

    config = load_config()
    if config.api_url:
        raise ConfigError(
            f"STEPLINE_API={config.api_url} is set: this command works on the store itself. "
            "Run it on the server's machine with STEPLINE_API unset"
        )
    return SqlBackend(
        config.db_url,
        config.storage_url,
        home=config.home,
        timeout=config.db_timeout,
        upgrade=upgrade,
    )


@server_app.callback()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="Address to listen on; anything but loopback needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8080,
    require_token: Annotated[
        bool, typer.Option("--require-token", help="Refuse requests without a token.")
    ] = False,
    max_body_mb: Annotated[
        float, typer.Option(help="Largest request body (metrics, logs) in MB.")
    ] = 64,
    max_upload_mb: Annotated[float, typer.Option(help="Largest artifact upload in MB.")] = 1 << 20,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "warning",
    upgrade: Annotated[
        bool,
        typer.Option(
            help="Bring the database to this stepline's schema on start (--no-upgrade: refuse "
            "to start on an older schema instead; run `stepline db upgrade` yourself)."
        ),
    ] = True,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from stepline.backend.sql.migrate import HEAD
    from stepline.backend.sql.tokens import SqlTokens
    from stepline.server.app import create_app, is_loopback

    backend = _store(upgrade)
    tokens = SqlTokens(backend)
    if not is_loopback(host) and not tokens.active():
        raise ConfigError(
            f"listening on {host} would open the store to the network without a token; "
            "create one first (`stepline server token create NAME`) and give it to clients "
            "as STEPLINE_TOKEN"
        )
    if require_token and not tokens.active():
        raise ConfigError("--require-token: create a token first (`stepline server token create`)")
    app = create_app(
        backend,
        tokens=tokens,
        require_token=require_token or not is_loopback(host),
        max_body=int(max_body_mb * (1 << 20)),
        max_upload=int(max_upload_mb * (1 << 20)),
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); pick another --port")
    sock.listen(2048)
    sock.set_inheritable(True)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}"
    auth = "a token is required" if app.state.auth and tokens.active() else "no token needed"
    print(f"stepline server on {url} ({auth})", flush=True)
    print(f"  store: {backend.safe_url}  artifacts: {backend.storage.root_url}", flush=True)
    if backend.upgraded_from is not None:
        was = backend.upgraded_from or "empty"
        print(f"  database schema upgraded: {was} -> {HEAD}", flush=True)
    print(f"  web UI: {url}/pipelines", flush=True)
    print(f"  API docs: {url}/api/docs   clients: STEPLINE_API={url}", flush=True)
    config = uvicorn.Config(
        app, log_level=log_level, access_log=False, timeout_graceful_shutdown=3, lifespan="on"
    )
    uvicorn.Server(config).run(sockets=[sock])


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="A name for who uses it, e.g. 'agent-gpu1'.")],
) -> None:
    """Create a token and print it (it is shown only this once)."""
    from stepline.backend.sql.tokens import SqlTokens

    rec, secret = SqlTokens(_store()).create(name)
    print(secret)
    print(
        f"token {rec.name!r} created; it is not stored in clear, so keep it now. Clients use "
        "it as STEPLINE_TOKEN",
        file=sys.stderr,
    )


@token_app.command("list")
def token_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The tokens (names and dates; secrets are not stored)."""
    import dataclasses

    from stepline.backend.sql.tokens import SqlTokens

    tokens = SqlTokens(_store()).list()
    if as_json:
        print(json.dumps([dataclasses.asdict(t) for t in tokens], indent=2))
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for col in ("NAME", "ID", "CREATED", "LAST USED", "STATE"):
        table.add_column(col)
    for t in tokens:
        table.add_row(
            t.name,
            t.id[:12],
            fmt_time(t.created),
            fmt_time(t.last_used) if t.last_used else "-",
            f"revoked {fmt_time(t.revoked)}" if t.revoked else "active",
        )
    stdout_console().print(table)


@token_app.command("revoke")
def token_revoke(name: Annotated[str, typer.Argument(help="The token's name or id.")]) -> None:
    """Revoke a token: requests carrying it are refused from now on."""
    from stepline.backend.sql.tokens import SqlTokens

    rec = SqlTokens(_store()).revoke(name)
    print(f"token {rec.name!r} revoked")
