"""``mesh config``: inspect the effective configuration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mesh.cli._console import console
from mesh.config import load_settings
from mesh.dev.loader import load_app

app = typer.Typer(help="Inspect the effective configuration (mesh.toml + MESH_* variables).")


@app.command("show")
def show(
    config_file: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Config file (default: $MESH_CONFIG or ./mesh.toml)."),
    ] = None,
    app_spec: Annotated[
        str | None,
        typer.Option(
            "--app", metavar="MODULE:APP", help="Also show each agent's effective policy."
        ),
    ] = None,
) -> None:
    """Print the effective settings as JSON, secrets masked.

    With ``--app``, each agent's effective concurrency, timeout and retry policy (the
    decorator's options win over mesh.toml), with its retry and dead-letter topics.
    """
    settings = load_settings(config_file)
    shown = settings.redacted()
    if app_spec is not None:
        app = load_app(app_spec)
        app.settings = settings
        shown["effective_agents"] = app.describe()
    console.print_json(json.dumps(shown))
