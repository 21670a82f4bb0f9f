"""``mesh publish``: send one event by hand, exactly as an agent would."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mesh.cli._console import console
from mesh.cli._options import (
    AsJson,
    BootstrapServers,
    ConfigFile,
    RegistryUrl,
    app_option,
    client_settings,
    load_app_option,
)
from mesh.dev.loader import load_object
from mesh.errors import ConfigError, InputError
from mesh.event import Event
from mesh.ops.publish import (
    event_from_json,
    event_type_of,
    extra_headers,
    find_event_type,
    publish_event,
)
from mesh.runtime.app import Mesh


def publish(
    *,
    event_type: Annotated[
        str,
        typer.Argument(
            metavar="EVENT_TYPE", help="module:ClassName, or a type name known to --app."
        ),
    ],
    data: Annotated[
        str,
        typer.Option("--data", "-d", help="JSON object, @file.json, or - for stdin."),
    ],
    app_spec: Annotated[str | None, app_option("App to look EVENT_TYPE up in.")] = None,
    key: Annotated[
        str | None, typer.Option("--key", help="Kafka key (default: the event type's).")
    ] = None,
    correlation_id: Annotated[
        str | None, typer.Option("--correlation-id", help="Join this chain id.")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="Extra header key=value.")
    ] = None,
    as_json: AsJson = False,
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """Validate --data as EVENT_TYPE and publish it; invalid input exits 2, nothing sent."""
    app = load_app_option(app_spec)
    model = _event_type(event_type, app)
    event = event_from_json(model, _read_data(data))
    headers = extra_headers(header or [])
    settings = client_settings(
        config_file,
        bootstrap_servers=bootstrap_servers,
        registry_url=registry_url,
        app=app,
        registry=True,
    )
    published = publish_event(
        settings,
        event,
        produced_by=app.name if app is not None else "mesh-cli",
        key=key,
        correlation_id=correlation_id,
        headers=headers,
    )
    if as_json:
        print(json.dumps(asdict(published)))
        return
    console.print(
        f"published [bold]{escape(published.event_type)}[/] to "
        f"{escape(published.topic)} partition {published.partition} offset {published.offset}",
        soft_wrap=True,
    )
    console.print(f"  event id:       {published.event_id}", soft_wrap=True)
    console.print(f"  correlation id: {escape(published.correlation_id)}", soft_wrap=True)
    if published.key is not None:
        console.print(f"  key:            {escape(published.key)}", soft_wrap=True)


def _event_type(spec: str, app: Mesh | None) -> type[Event]:
    if ":" not in spec:
        return find_event_type(spec, app)
    try:
        return event_type_of(load_object(spec), spec)
    except ConfigError as exc:
        raise InputError(f"unknown event type {spec!r}: {exc}") from None


def _read_data(data: str) -> str:
    """``--data`` as given, from a file (``@path``), or from stdin (``-``)."""
    if data == "-":
        return sys.stdin.read()
    if data.startswith("@"):
        try:
            return Path(data[1:]).read_text()
        except OSError as exc:
            raise InputError(f"--data {data}: cannot read: {exc.strerror}") from None
    return data
