"""``zennas serve``, ``zennas keys`` and ``zennas remote``: the service from the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

keys_app = typer.Typer(help="API keys of the service (stored hashed in its database).", no_args_is_help=True)
remote_app = typer.Typer(help="Talk to a running zennas service.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command(name="serve")(serve)
    app.add_typer(keys_app, name="keys")
    app.add_typer(remote_app, name="remote")


def serve(host: Annotated[str | None, typer.Option(help="bind address (default $ZENNAS_HOST or 127.0.0.1)")] = None,
          port: Annotated[int | None, typer.Option(help="port (default $ZENNAS_PORT or 8000)")] = None,
          dev: Annotated[bool, typer.Option(help="development mode: no API keys, loopback only")] = False,
          no_dispatcher: Annotated[bool, typer.Option(help="serve HTTP only (another process runs searches)")] = False) -> None:
    """Start the service: HTTP API + a dispatcher process running the searches."""
    from pydantic import ValidationError
    from zennas_api.serve import serve as _serve  # the CLI composes the service; the library never imports it
    from zennas_api.settings import Settings

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if dev:
        overrides["dev_mode"] = True
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        err = e.errors()[0]
        raise typer.BadParameter(err["msg"]) from e
    _serve(settings, dispatcher=not no_dispatcher)


def _engine() -> Any:
    from zennas_api.db import make_engine, migrate
    from zennas_api.settings import Settings

    s = Settings()
    migrate(s.sqlalchemy_url)
    return make_engine(s.sqlalchemy_url)


@keys_app.command("create")
def keys_create(tenant: Annotated[str, typer.Option(help="tenant the key acts for")]) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    from zennas_api.auth import create_key

    try:
        typer.echo(create_key(_engine(), tenant))
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--tenant") from e


@keys_app.command("list")
def keys_list() -> None:
    from zennas_api.auth import list_keys

    for k in list_keys(_engine()):
        state = "revoked" if k["revoked_at"] else "active"
        typer.echo(f"{k['id']}  {k['tenant']:<20} {state}")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="the key id (the part after zn_)")]) -> None:
    from zennas_api.auth import revoke_key

    if not revoke_key(_engine(), key_id):
        raise typer.BadParameter(f"no active key {key_id!r}", param_hint="KEY_ID")
    typer.echo(f"revoked {key_id}")


def _client(url: str | None, key: str | None) -> Any:
    from zennas.client import Client

    return Client(url or os.environ.get("ZENNAS_URL", "http://127.0.0.1:8000"), key or os.environ.get("ZENNAS_API_KEY"))


UrlOpt = Annotated[str | None, typer.Option("--url", help="service URL (default $ZENNAS_URL)")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", help="API key (default $ZENNAS_API_KEY)")]


@remote_app.command("submit")
def remote_submit(spec: Annotated[Path, typer.Argument(help="search spec JSON file (the POST /v1/searches body)")],
                  url: UrlOpt = None, api_key: KeyOpt = None,
                  idempotency_key: Annotated[str | None, typer.Option()] = None) -> None:
    try:
        body = json.loads(spec.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise typer.BadParameter(f"cannot read a JSON spec from {spec}: {e}", param_hint="SPEC") from e
    with _client(url, api_key) as c:
        typer.echo(json.dumps(c.submit(body, idempotency_key=idempotency_key), indent=2))


@remote_app.command("status")
def remote_status(search_id: str, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    with _client(url, api_key) as c:
        typer.echo(json.dumps(c.get(search_id), indent=2))


@remote_app.command("wait")
def remote_wait(search_id: str, url: UrlOpt = None, api_key: KeyOpt = None,
                timeout: Annotated[float | None, typer.Option()] = None) -> None:
    with _client(url, api_key) as c:
        job = c.wait(search_id, timeout=timeout, progress=True)
    typer.echo(f"{search_id}: {job['state']}" + (f" ({job['error']})" if job.get("error") else ""))
    if job["state"] != "succeeded":
        raise typer.Exit(1)


@remote_app.command("cancel")
def remote_cancel(search_id: str, url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    with _client(url, api_key) as c:
        typer.echo(c.cancel(search_id)["state"])


@remote_app.command("download")
def remote_download(search_id: str, out: Annotated[Path, typer.Option("--out")] = Path("backbone.zip"),
                    format: Annotated[str, typer.Option(help="zip | json")] = "zip",
                    url: UrlOpt = None, api_key: KeyOpt = None) -> None:
    with _client(url, api_key) as c:
        typer.echo(str(c.download(search_id, out, format=format)))
