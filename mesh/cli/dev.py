"""``mesh dev``: the embedded development stack (Tansu broker + mesh registry)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mesh.cli._console import console
from mesh.cli._options import AsJson, BootstrapServers, ConfigFile, RegistryUrl
from mesh.config import load_settings
from mesh.dev.smoke import run_smoke
from mesh.dev.stack import DevStack

app = typer.Typer(
    help="Run a local broker, schema registry and console in the background (state in .mesh/).",
    no_args_is_help=True,
)

StateDir = Annotated[Path, typer.Option("--state-dir", help="Where pids, ports and logs live.")]


@app.command("up")
def up(
    *,
    broker_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Broker port on 127.0.0.1.")
    ] = 9092,
    registry_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Registry port on 127.0.0.1.")
    ] = 8081,
    console_port: Annotated[
        int, typer.Option(min=1, max=65535, help="`mesh console` port on 127.0.0.1.")
    ] = 8080,
    with_console: Annotated[
        bool, typer.Option("--console/--no-console", help="Start `mesh console` too.")
    ] = True,
    allow_writes: Annotated[
        bool,
        typer.Option("--allow-writes", help="Let the console redrive dead letters."),
    ] = False,
    state_dir: StateDir = Path(".mesh"),
) -> None:
    """Start the embedded broker, registry and console, or report the stack already running.

    The console reads every mesh consumer group on the broker (read-only unless
    --allow-writes; basic auth when console_auth is set); `mesh dev down` stops it too.
    """
    stack = DevStack(state_dir)
    already = bool(stack.status()) and all(alive for _, alive in stack.status().values())
    records = stack.up(
        broker_port=broker_port,
        registry_port=registry_port,
        console_port=console_port if with_console else None,
        console_args=["--allow-writes"] if allow_writes else [],
    )
    by_name = {rec.name: rec for rec in records}
    verb = "already running" if already else "started"
    console.print(f"mesh dev stack {verb}")
    console.print(f"  bootstrap servers: [bold]{by_name['broker'].url}[/]")
    console.print(f"  registry url:      [bold]{by_name['registry'].url}[/]")
    if "console" in by_name:
        console.print(f"  console:           [bold]{by_name['console'].url}[/]")


@app.command("status")
def status(state_dir: StateDir = Path(".mesh"), as_json: AsJson = False) -> None:
    """Show the processes of the stack and whether they run (exit 1 when not all run)."""
    stack = DevStack(state_dir)
    current = stack.status()
    if as_json:
        for rec, alive in current.values():
            kind = {"broker_kind": stack.broker_kind()} if rec.name == "broker" else {}
            print(
                json.dumps(
                    {
                        "process": rec.name,
                        "pid": rec.pid,
                        "address": rec.url,
                        "running": alive,
                        "log": rec.log,
                        **kind,
                    }
                )
            )
        if not current or not all(alive for _, alive in current.values()):
            raise typer.Exit(1)
        return
    if not current:
        console.print("mesh dev stack is not running (start it with `mesh dev up`)")
        raise typer.Exit(1)
    table = Table("process", "pid", "address", "state", "log")
    for rec, alive in current.values():
        state = "[green]running[/]" if alive else "[red]stopped[/]"
        table.add_row(rec.name, str(rec.pid), rec.url, state, rec.log)
    console.print(table)
    if not all(alive for _, alive in current.values()):
        raise typer.Exit(1)


@app.command("down")
def down(state_dir: StateDir = Path(".mesh")) -> None:
    """Stop the processes `mesh dev up` started (and nothing else)."""
    stopped = DevStack(state_dir).down()
    if not stopped:
        console.print("mesh dev stack was not running")
        return
    for rec in stopped:
        console.print(f"stopped {rec.name} (pid {rec.pid})")


@app.command("smoke")
def smoke(
    *,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Events to send.")] = 10,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Bound of each step, in seconds.")
    ] = 10.0,
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
    config_file: ConfigFile = None,
    state_dir: StateDir = Path(".mesh"),
) -> None:
    """Publish Avro events to a fresh topic and read them back: is the stack usable?"""
    flags = {"bootstrap_servers": bootstrap_servers, "registry_url": registry_url}
    settings = DevStack(state_dir).settings(load_settings(config_file, **flags))
    result = run_smoke(settings, count=count, timeout_s=timeout)
    table = Table(show_header=False, box=None)
    table.add_row("broker", result.bootstrap_servers)
    table.add_row("registry", result.registry_url)
    table.add_row("topic", f"{result.topic} (deleted)")
    table.add_row("schema id", str(result.schema_id))
    table.add_row("events", f"{result.events} published, read back and verified")
    table.add_row("publish", f"{result.publish_ms:.1f} ms")
    table.add_row("round trip", f"{result.round_trip_ms:.1f} ms")
    console.print("[green]smoke test passed[/]")
    console.print(table)
