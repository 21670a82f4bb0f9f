"""``mesh run``: run the agents of an app in this process."""

from __future__ import annotations

from typing import Annotated

import typer

from mesh.cli._app import load_app


def run(
    app_spec: Annotated[str, typer.Argument(metavar="MODULE:APP", help="e.g. agents.research:app")],
    agent: Annotated[
        list[str] | None,
        typer.Option("--agent", "-a", help="Run only this agent (repeatable); default: all."),
    ] = None,
) -> None:
    """Run the agents of an app until SIGTERM/SIGINT; start more processes to scale out."""
    load_app(app_spec).run(agent or None)
