"""The options every client command shares, defined once, and how they become settings.

Where a command finds the cluster, highest first: ``-b``/``--registry-url``, ``MESH_*``
variables, ``mesh.toml``, the running ``mesh dev`` stack (``.mesh/stack.json``), the
defaults. Before it does anything it checks that what it needs answers, within
:data:`~mesh.ops.cluster.CONNECT_TIMEOUT_S`, with a spinner on a terminal.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from mesh.cli._console import err_console
from mesh.config import Settings, load_settings, redact_url
from mesh.dev.loader import load_app
from mesh.dev.stack import DevStack
from mesh.errors import ConfigError, InputError
from mesh.ops.cluster import check_broker, check_registry
from mesh.runtime.app import Mesh

__all__ = [
    "AsJson",
    "BootstrapServers",
    "ConfigFile",
    "Execute",
    "Limit",
    "RegistryUrl",
    "app_option",
    "client_settings",
    "load_app_option",
]

STATE_DIR = Path(".mesh")

BootstrapServers = Annotated[
    str | None,
    typer.Option(
        "--bootstrap-servers",
        "-b",
        metavar="HOST:PORT",
        help="Kafka to use (default: MESH_BOOTSTRAP_SERVERS, mesh.toml, the running "
        "`mesh dev` stack, 127.0.0.1:9092).",
        show_default=False,
    ),
]
RegistryUrl = Annotated[
    str | None,
    typer.Option(
        "--registry-url",
        metavar="URL",
        help="Schema registry to use (default: MESH_REGISTRY_URL, mesh.toml, the running "
        "`mesh dev` stack, http://127.0.0.1:8081).",
        show_default=False,
    ),
]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file (default: $MESH_CONFIG or ./mesh.toml)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (one object per line).")]
Limit = Annotated[int | None, typer.Option("--limit", "-n", min=1, help="Stop after N.")]
Execute = Annotated[
    bool, typer.Option("--execute/--dry-run", help="Write to Kafka (default: print the plan).")
]


def app_option(help_text: str) -> Any:
    """``--app MODULE:APP`` (or ``MESH_APP``), with what the app is for in this command."""
    return typer.Option("--app", envvar="MESH_APP", metavar="MODULE:APP", help=help_text)


def load_app_option(spec: str | None) -> Mesh | None:
    """The app ``--app`` names; one that cannot be loaded is a usage error."""
    if spec is None:
        return None
    try:
        return load_app(spec)
    except ConfigError as exc:
        raise InputError(f"--app {spec}: {exc}") from None


def client_settings(
    config_file: Path | None = None,
    *,
    bootstrap_servers: str | None = None,
    registry_url: str | None = None,
    app: Mesh | None = None,
    broker: bool = True,
    registry: bool = False,
) -> Settings:
    """The settings a command uses, checked to reach the *broker* (and the *registry*).

    *app*'s own settings are the base unless ``--config`` names a file; the result is
    also given to *app*, so everything it starts uses the same cluster.
    """
    flags = {
        k: v
        for k, v in (("bootstrap_servers", bootstrap_servers), ("registry_url", registry_url))
        if v is not None
    }
    if app is not None and config_file is None:
        base = app.settings.model_copy(update=flags) if flags else app.settings
    else:
        base = load_settings(config_file, **flags)
    settings = DevStack(STATE_DIR).settings(base)
    if app is not None:
        app.settings = settings
    if broker:
        with _waiting(f"connecting to Kafka at {settings.bootstrap_servers}"):
            check_broker(settings)
    if registry:
        with _waiting(f"connecting to the schema registry at {redact_url(settings.registry_url)}"):
            check_registry(settings)
    return settings


def _waiting(what: str) -> AbstractContextManager[object]:
    """A spinner on stderr while *what* happens, when stderr is a terminal."""
    if not err_console.is_terminal:
        return nullcontext()
    return err_console.status(escape(what) + "…")
