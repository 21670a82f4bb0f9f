"""``mesh groups``: consumer groups with their state and lag per partition, like
kafka-consumer-groups --describe."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Column, Table

from mesh.cli._console import console, err_console
from mesh.cli._options import AsJson, BootstrapServers, ConfigFile, client_settings
from mesh.ops.cluster import GroupPartition, group_lag


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
    by_group: dict[str, list[GroupPartition]] = {}
    for row in rows:
        by_group.setdefault(row.group, []).append(row)
    for name, parts in by_group.items():
        first = parts[0]
        console.print(
            f"[bold]{escape(name)}[/] {first.state.lower()}, {first.members} member(s)",
            soft_wrap=True,
        )
        table = Table(
            Column("topic", overflow="fold"),
            Column("partition", justify="right"),
            Column("committed", justify="right"),
            Column("end", justify="right"),
            Column("lag", justify="right"),
        )
        for part in parts:
            committed = "-" if part.committed is None else str(part.committed)
            table.add_row(
                escape(part.topic), str(part.partition), committed, str(part.end), str(part.lag)
            )
        console.print(table)
