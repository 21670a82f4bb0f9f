"""``mesh trace ID``: one chain as a tree, from Kafka alone (:mod:`mesh.ops.trace`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.tree import Tree

from mesh.cli._console import console, err_console
from mesh.cli._options import (
    AsJson,
    BootstrapServers,
    ConfigFile,
    RegistryUrl,
    app_option,
    client_settings,
    load_app_option,
)
from mesh.config import parse_duration
from mesh.errors import InputError
from mesh.ops.trace import Failure, Step, trace

__all__ = ["trace_"]


def trace_(
    *,
    ident: Annotated[
        str,
        typer.Argument(
            metavar="ID",
            help="The chain's mesh.correlation-id, or the mesh.event-id of any of its events.",
        ),
    ],
    since: Annotated[str, typer.Option("--since", help="How far back to look, e.g. 2h.")] = "24h",
    app_spec: Annotated[
        str | None, app_option("Search this app's event, retry and dead-letter topics.")
    ] = None,
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", "-t", help="Search topics matching this glob (repeatable)."),
    ] = None,
    as_json: AsJson = False,
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """Show one chain of events as a tree, with its retries and dead letters.

    ID is the chain's correlation id or the id of any of its events. Each event's agent,
    type, time and step latency, linked by causation id. Searches the topics of --app and
    those matching --topic; with neither, every topic on the cluster not starting with "_".
    """
    try:
        since_s = parse_duration(since)
    except ValueError as exc:
        raise InputError(f"--since {since}: {exc}") from None
    mesh_app = load_app_option(app_spec)
    settings = client_settings(
        config_file, bootstrap_servers=bootstrap_servers, registry_url=registry_url, app=mesh_app
    )
    found = trace(settings, ident, since_s=since_s, topics=topic or [], app=mesh_app)
    if as_json:
        print(json.dumps(found.to_json()))
        return
    if not found.roots:
        err_console.print(
            f"no events with correlation id or event id {escape(ident)} in the last "
            f"{escape(since)} "
            f"({found.scanned} records in {found.topics} topics, {found.seconds:.2f}s)"
        )
        raise typer.Exit(1)
    found_by = "" if found.event_id is None else f" (found by event {escape(found.event_id)})"
    root = Tree(f"[bold]chain {escape(found.correlation_id)}[/]{found_by}")
    for step in found.roots:
        _add(root, step)
    console.print(root)
    err_console.print(
        f"{found.steps} event(s); scanned {found.scanned} records in {found.topics} topics "
        f"in {found.seconds:.2f}s"
    )


def _add(parent: Tree, step: Step) -> None:
    latency = "" if step.latency_ms is None else f" [cyan]+{step.latency_ms} ms[/]"
    node = parent.add(
        f"[bold]{escape(step.event_type or '?')}[/] by [green]{escape(step.produced_by or '?')}"
        f"[/] [dim]{_time(step.timestamp_ms)} {escape(step.topic)}[{step.partition}]"
        f"@{step.offset}[/]{latency}"
    )
    for failure in step.failures:
        node.add(_failure(failure))
    for child in step.children:
        _add(node, child)


def _failure(failure: Failure) -> str:
    error = f"{failure.error_class or '?'}: {failure.error_message or ''}"
    who = escape(failure.agent or failure.group or "?")
    when = _time(failure.timestamp_ms)
    if failure.kind == "retry":
        return f"[yellow]retry[/] {who} attempt {failure.attempt} failed [dim]{when}[/]: " + escape(
            error
        )
    return (
        f"[red]dead letter[/] {who} ({escape(failure.reason or '?')}, after {failure.attempt} "
        f"attempt(s)) [dim]{when} {escape(failure.topic)}[/]: " + escape(error)
    )


def _time(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")
