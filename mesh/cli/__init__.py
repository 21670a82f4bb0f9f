"""The ``mesh`` command: one thin module per command group (parse, call the library, print)."""

from __future__ import annotations

import sys

import typer

from mesh.cli import config, dev, registry, run, schema
from mesh.cli._console import err_console
from mesh.errors import MeshError

__all__ = ["app", "main"]

app = typer.Typer(
    name="mesh",
    help="A Kafka-native event mesh for AI agents.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(dev.app, name="dev")
app.add_typer(config.app, name="config")
app.add_typer(registry.app, name="registry")
app.add_typer(schema.app, name="schema")
app.command("run")(run.run)


def main() -> None:
    """Entry point: a reported error is one line on stderr and exit code 1, never a traceback."""
    try:
        app()
    except MeshError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        sys.exit(1)
