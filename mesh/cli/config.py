"""``mesh config``: inspect the effective configuration."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from mesh.cli._console import console
from mesh.cli._options import (
    BootstrapServers,
    ConfigFile,
    RegistryUrl,
    app_option,
    client_settings,
    load_app_option,
)

app = typer.Typer(help="Inspect the effective configuration (mesh.toml + MESH_* variables).")


@app.command("show")
def show(
    config_file: ConfigFile = None,
    app_spec: Annotated[str | None, app_option("Also show each agent's effective policy.")] = None,
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
) -> None:
    """Print the effective settings as JSON, secrets masked (connects to nothing).

    The addresses are those every command would use: flags, then MESH_* variables, then
    mesh.toml, then the running `mesh dev` stack. With --app, each agent's effective
    concurrency, timeout and retry policy (the decorator's options win over mesh.toml),
    with its retry and dead-letter topics.
    """
    app = load_app_option(app_spec)
    settings = client_settings(
        config_file,
        bootstrap_servers=bootstrap_servers,
        registry_url=registry_url,
        app=app,
        broker=False,
    )
    shown = settings.redacted()
    if app is not None:
        shown["effective_agents"] = app.describe()
    console.print_json(json.dumps(shown))
