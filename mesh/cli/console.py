"""``mesh console``: every agent, chain and dead letter in a browser (:mod:`mesh.console`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from aiohttp import web

from mesh.cli._console import err_console
from mesh.config import load_settings
from mesh.console.app import Console, ConsoleOptions, build_app
from mesh.dev.loader import load_app
from mesh.errors import ConfigError, InputError

__all__ = ["console"]


def console(
    *,
    app_spec: Annotated[
        str | None,
        typer.Option(
            "--app",
            envvar="MESH_APP",
            metavar="MODULE:APP",
            help="Show this app's agents (default: every mesh consumer group on the cluster).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8080,
    metrics: Annotated[
        list[str] | None,
        typer.Option(
            "--metrics",
            metavar="URL",
            help="An agent process's /metrics, for rates and workers (repeatable).",
        ),
    ] = None,
    allow_writes: Annotated[
        bool, typer.Option("--allow-writes", help="Allow redriving dead letters.")
    ] = False,
    auth: Annotated[
        str | None,
        typer.Option(
            metavar="USER:PASSWORD",
            help="Require basic auth on every page (default: console_auth in mesh.toml, "
            "or MESH_CONSOLE_AUTH).",
            show_default=False,
        ),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Config file (default: $MESH_CONFIG or ./mesh.toml)."),
    ] = None,
) -> None:
    """Serve the console until Ctrl-C: agents, chains, dead letters, topics and schemas,
    from Kafka, the registry and the agents' /metrics. Read-only unless --allow-writes."""
    if auth is not None and ":" not in auth:
        raise InputError("--auth: use USER:PASSWORD")
    mesh_app = None
    if app_spec is not None:
        try:
            mesh_app = load_app(app_spec)
        except ConfigError as exc:
            raise InputError(f"--app {app_spec}: {exc}") from None
    settings = (
        mesh_app.settings if mesh_app is not None and config_file is None else None
    ) or load_settings(config_file)
    options = ConsoleOptions(
        settings,
        app=mesh_app,
        metrics_urls=metrics or [],
        allow_writes=allow_writes,
        auth=auth,
    )
    shown = f"[{host}]" if ":" in host else host
    err_console.print(
        f"mesh console on http://{shown}:{port}/ "
        f"({'writes allowed' if allow_writes else 'read-only'}; Ctrl-C to stop)",
        soft_wrap=True,
    )
    web.run_app(build_app(Console(options)), host=host, port=port, print=None)
