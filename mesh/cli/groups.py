"""``mesh groups``: consumer groups with their state and lag per partition, like
kafka-consumer-groups --describe."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from mesh.cli._console import console, err_console
from mesh.cli._options import AsJson, BootstrapServers, ConfigFile, client_settings
from mesh.ops.cluster import group_lag


def groups(
    *,
    group: Annotated[
        list[str] | None, typer.Argument(metavar="[GROUP]...", help="Default: every group.")
    ] = None,
    as_json: AsJson = False,
    bootstrap_servers: BootstrapServers = None,
    config_file: ConfigFile = None,
) -> None:
    """Show consumer groups with their lag per partition.

    Per group its state and members; per partition the committed offset, the end and
    the lag. An agent's group is APP.AGENT.
    """
    settings = client_settings(config_file, bootstrap_servers=bootstrap_servers)
    rows = group_lag(settings, group or [])
    if as_json:
        for row in rows:
            print(json.dumps(row.to_json()))
        return
    if not rows:
        err_console.print("no consumer group has committed offsets")
        return
    table = Table("group", "state", "members", "topic", "part", "committed", "end", "lag")
    for column in table.columns[2:]:
        column.justify = "right"
    table.columns[3].justify = "left"
    for row in rows:
        table.add_row(
            escape(row.group),
            row.state.lower(),
            str(row.members),
            escape(row.topic),
            str(row.partition),
            "-" if row.committed is None else str(row.committed),
            str(row.end),
            str(row.lag),
        )
    console.print(table)
