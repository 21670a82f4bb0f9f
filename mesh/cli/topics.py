"""``mesh topics``: the cluster's topics with their partitions and sizes, like kcat -L."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from mesh.cli._console import console
from mesh.cli._options import AsJson, BootstrapServers, ConfigFile, client_settings
from mesh.ops.cluster import topics as list_topics


def topics(
    *,
    internal: Annotated[
        bool, typer.Option("--internal", help="Also topics starting with _ (_schemas, ...).")
    ] = False,
    as_json: AsJson = False,
    bootstrap_servers: BootstrapServers = None,
    config_file: ConfigFile = None,
) -> None:
    """List topics: partitions, and records held (high minus low watermark, summed)."""
    settings = client_settings(config_file, bootstrap_servers=bootstrap_servers)
    found = list_topics(settings, internal=internal)
    if as_json:
        for info in found:
            print(json.dumps(info.to_json()))
        return
    table = Table(
        Column("topic", overflow="fold"),
        Column("partitions", justify="right"),
        Column("records", justify="right"),
    )
    for info in found:
        table.add_row(escape(info.name), str(info.partitions), str(info.records))
    console.print(table)
