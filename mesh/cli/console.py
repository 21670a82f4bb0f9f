"""``mesh console``: every agent, chain and dead letter in a browser (:mod:`mesh.console`)."""

from __future__ import annotations

from typing import Annotated

import typer
from aiohttp import web

from mesh.cli._console import err_console
from mesh.cli._options import (
    BootstrapServers,
    ConfigFile,
    RegistryUrl,
    app_option,
    client_settings,
    load_app_option,
)
from mesh.console.app import Console, ConsoleOptions, build_app
from mesh.errors import InputError

__all__ = ["console"]


def console(
    *,
    app_spec: Annotated[
        str | None,
        app_option("Show this app's agents (default: every mesh consumer group on the cluster)."),
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
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """Serve the console until Ctrl-C: agents, chains, dead letters, topics and schemas,
    from Kafka, the registry and the agents' /metrics. Read-only unless --allow-writes."""
    if auth is not None and ":" not in auth:
        raise InputError("--auth: use USER:PASSWORD")
    mesh_app = load_app_option(app_spec)
    settings = client_settings(
        config_file, bootstrap_servers=bootstrap_servers, registry_url=registry_url, app=mesh_app
    )
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
