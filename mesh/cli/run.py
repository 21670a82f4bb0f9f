"""``mesh run``: run the agents of an app in this process."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from mesh.cli._app import load_app


def run(
    app_spec: Annotated[str, typer.Argument(metavar="MODULE:APP", help="e.g. agents.hello:app")],
    agent: Annotated[
        list[str] | None,
        typer.Option("--agent", "-a", help="Run only this agent (repeatable); default: all."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Run the agents of an app until SIGTERM/SIGINT; start more processes to scale out.

    Each agent is one consumer group (APP.AGENT); processes running the same app share
    the partitions of each group. On SIGTERM in-flight events finish (bounded), offsets
    are committed, then the process leaves the group.
    """
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    load_app(app_spec).run(agent or None)
