"""``mesh tail``: print the records of a topic as they arrive, values decoded."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape

from mesh.cli._console import console, err_console
from mesh.cli._options import (
    AsJson,
    BootstrapServers,
    ConfigFile,
    Limit,
    RegistryUrl,
    client_settings,
)
from mesh.kafka.reader import Tail, TailRecord


def tail(
    *,
    topic: Annotated[str, typer.Argument(help="Topic to read (never created).")],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record, not the end.")
    ] = False,
    as_json: AsJson = False,
    limit: Limit = None,
    partition: Annotated[
        list[int] | None,
        typer.Option("--partition", "-p", min=0, help="Read only this partition (repeatable)."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=0, help="Stop after S seconds without a record."),
    ] = None,
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """Follow TOPIC (all partitions, no consumer group) until Ctrl-C, --limit or --timeout."""
    settings = client_settings(
        config_file, bootstrap_servers=bootstrap_servers, registry_url=registry_url
    )
    with Tail(settings, topic, partitions=partition, from_beginning=from_beginning) as reader:
        start = "the beginning" if from_beginning else "the end"
        err_console.print(
            f"tailing {escape(topic)} partitions "
            f"{', '.join(map(str, reader.positions))} from {start}",
            soft_wrap=True,
        )
        for record in reader.records(count=limit, idle_timeout_s=timeout):
            if as_json:
                print(record.to_json_line(), flush=True)
            else:
                _print(record)


def _print(record: TailRecord) -> None:
    data = record.to_json()
    stamp = (
        datetime.fromtimestamp(record.timestamp_ms / 1000, UTC).isoformat(timespec="milliseconds")
        if record.timestamp_ms is not None
        else "-"
    )
    event_type = data["headers"].get("mesh.event-type") or ""
    console.print(
        f"[bold]{escape(record.topic)}[/] [cyan]p{record.partition}@{record.offset}[/] "
        f"[dim]{stamp}[/] key=[yellow]{escape(str(data['key']))}[/] {escape(event_type)}",
        soft_wrap=True,
    )
    if record.value_error is not None:
        console.print(f"  [red]value_error:[/] {escape(record.value_error)}", soft_wrap=True)
        console.print(f"  value_base64: {data['value_base64']}", soft_wrap=True)
    else:
        console.print(f"  {escape(json.dumps(data['value']))}", soft_wrap=True)
