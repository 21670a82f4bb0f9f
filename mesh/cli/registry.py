"""``mesh registry``: run the Confluent-compatible schema registry."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from mesh.config import load_settings
from mesh.errors import ConfigError
from mesh.kafka.clients import admin_config
from mesh.kafka.compat import tuning
from mesh.registry import RegistryConfig, run

app = typer.Typer(
    help="The Confluent-compatible schema registry (state in a Kafka topic).",
    no_args_is_help=True,
)


@app.command("serve")
def serve(
    *,
    bootstrap_servers: Annotated[
        str | None,
        typer.Option(
            "--bootstrap-servers",
            "-b",
            help="Kafka bootstrap servers (default: MESH_BOOTSTRAP_SERVERS or mesh.toml).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8081,
    topic: Annotated[str, typer.Option(help="Topic holding the registry's state.")] = "_schemas",
    advertised_url: Annotated[
        str | None,
        typer.Option(help="URL other registries forward writes to (default: http://HOST:PORT)."),
    ] = None,
    basic_auth: Annotated[
        str | None,
        typer.Option(
            envvar="MESH_REGISTRY_BASIC_AUTH",
            help="Require HTTP basic auth, 'user:password' (or MESH_REGISTRY_BASIC_AUTH).",
            show_default=False,
        ),
    ] = None,
    election_session_timeout_ms: Annotated[
        int,
        typer.Option(
            min=1000,
            help="Session timeout of the primary election group: failover takes about this long.",
        ),
    ] = 6000,
    replication_factor: Annotated[
        int,
        typer.Option(
            min=-1,
            envvar="MESH_REGISTRY_REPLICATION_FACTOR",
            help="Replication factor of the topic when the registry creates it "
            "(-1: the broker's default.replication.factor).",
        ),
    ] = -1,
    write_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="Seconds a write may take before it fails (the Kafka delivery timeout is "
            "shorter).",
        ),
    ] = 15.0,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Serve HTTPS with this PEM certificate (chain included).", exists=True),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(help="The PEM private key of --tls-cert.", exists=True),
    ] = None,
    config_file: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Config file (default: $MESH_CONFIG or ./mesh.toml)."),
    ] = None,
) -> None:
    """Serve the registry until interrupted (SIGINT/SIGTERM)."""
    if basic_auth is not None and ":" not in basic_auth:
        raise ConfigError("--basic-auth must be 'user:password'")
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    if replication_factor == 0:
        raise ConfigError("--replication-factor must be -1 (the broker's default) or at least 1")
    settings = load_settings(config_file, bootstrap_servers=bootstrap_servers)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run(
        RegistryConfig(
            kafka=admin_config(settings),
            reader_tuning=tuning(settings, "registry"),
            host=host,
            port=port,
            topic=topic,
            advertised_url=advertised_url,
            basic_auth=basic_auth,
            election_session_timeout_ms=election_session_timeout_ms,
            replication_factor=replication_factor,
            write_timeout_s=write_timeout,
            tls_cert=None if tls_cert is None else str(tls_cert),
            tls_key=None if tls_key is None else str(tls_key),
        )
    )
