"""``mesh config``: inspect the effective configuration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mesh.cli._console import console
from mesh.config import load_settings

app = typer.Typer(help="Inspect the effective configuration (mesh.toml + MESH_* variables).")


@app.command("show")
def show(
    config_file: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Config file (default: $MESH_CONFIG or ./mesh.toml)."),
    ] = None,
) -> None:
    """Print the effective settings as JSON, secrets masked."""
    settings = load_settings(config_file)
    console.print_json(json.dumps(settings.redacted()))
