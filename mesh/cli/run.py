"""``mesh run``: run the agents of an app in this process, or in N supervised ones."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from mesh.cli._options import BootstrapServers, ConfigFile, RegistryUrl, client_settings
from mesh.dev.loader import load_app
from mesh.dev.stack import group_config
from mesh.dev.supervisor import WorkerRun, supervise
from mesh.errors import InputError
from mesh.logs import configure_logging
from mesh.runtime.status import observed


def run(
    *,
    app_spec: Annotated[
        str | None,
        typer.Argument(
            metavar="MODULE:APP",
            envvar="MESH_APP",
            help="e.g. agents.hello:app (default: $MESH_APP).",
            show_default=False,
        ),
    ] = None,
    agent: Annotated[
        list[str] | None,
        typer.Option("--agent", "-a", help="Run only this agent (repeatable); default: all."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve /metrics, /healthz and /readyz on this port; 0: off "
            "(default: metrics_port in settings, 9464; taken: a warning).",
            show_default=False,
        ),
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="Worker processes of the app; 1: this process. With more, a supervisor "
            "starts them, restarts one that crashes, forwards SIGTERM/SIGINT, and serves "
            'their metrics merged, labelled worker="0".."N-1".',
        ),
    ] = 1,
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """Run the agents of an app until SIGTERM/SIGINT; start more processes to scale out.

    Each agent is one consumer group (APP.AGENT); processes running the same app share
    the partitions of each group. On SIGTERM in-flight events finish (bounded), offsets
    are committed, then the process leaves the group. Logs are JSON lines unless stderr
    is a terminal. With --processes N, N worker processes run the app under a supervisor
    that restarts a crashed one (it gives up, exit 1, after 5 exits of one worker within
    60 s) and exits 0 once they all drained. On the embedded broker (`mesh dev up`) the
    groups use a 2 s session timeout, so partitions are assigned within about a second.
    """
    if app_spec is None:
        raise InputError("name the app: mesh run MODULE:APP (or set MESH_APP)")
    configure_logging(log_level)
    app = load_app(app_spec)
    settings = client_settings(
        config_file,
        bootstrap_servers=bootstrap_servers,
        registry_url=registry_url,
        app=app,
        registry=True,
    )
    port = settings.metrics_port if metrics_port is None else metrics_port
    chosen = metrics_port is not None or "metrics_port" in settings.model_fields_set
    if processes > 1:
        work = WorkerRun(app_spec, settings, tuple(agent or ()), log_level)
        code = supervise(work, processes, port=port, host=settings.metrics_host, required=chosen)
        raise typer.Exit(code)
    with observed(app, agent, port=port, host=settings.metrics_host, required=chosen) as metrics:
        asyncio.run(
            app.serve(
                agent or None,
                handle_signals=True,
                metrics=metrics,
                consumer_config=group_config(settings),
            )
        )
