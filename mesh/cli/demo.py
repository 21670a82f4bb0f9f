"""``mesh demo``: run the research pipeline under faults and watch it from Kafka."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from mesh.cli._console import console, err_console
from mesh.cli._options import BootstrapServers, ConfigFile, RegistryUrl
from mesh.config import Settings, load_settings
from mesh.dev.demo import APP_SPEC, DemoOptions, DemoReport, RunStatus, run_demo
from mesh.errors import InputError

__all__ = ["demo"]


def demo(
    *,
    requests: Annotated[
        int, typer.Option("--requests", "-n", min=1, max=10_000, help="Research requests.")
    ] = 100,
    failure_rate: Annotated[
        float,
        typer.Option(
            min=0.0, max=1.0, help="Share of model calls that fail (transient, hang, malformed)."
        ),
    ] = 0.1,
    latency_ms: Annotated[
        str, typer.Option(help="Model latency range in milliseconds, LOW-HIGH.")
    ] = "200-800",
    workers: Annotated[int, typer.Option(min=1, max=16, help="Worker processes (`mesh run`).")] = 3,
    crash_worker: Annotated[
        bool, typer.Option(help="SIGKILL a worker mid-run and start a new one.")
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=1.0, help="Give up this many seconds after submitting.")
    ] = 100.0,
    keep_stack: Annotated[
        bool,
        typer.Option(help="Leave the embedded broker and registry running, to look deeper."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="No live view; a JSON summary.")] = False,
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """Run the research pipeline (shipped with mesh) under injected faults; 0 if nothing is lost.

    Starts a fresh embedded broker and registry for the run (unless -b,
    MESH_BOOTSTRAP_SERVERS or mesh.toml names a cluster), several `mesh run` workers and
    `mesh console` (its URL printed), submits the requests and shows progress read from
    Kafka. Exit code 0 when every request completed or its
    failure is in a dead-letter topic; 1 otherwise; 130 on Ctrl-C. Worker logs are in
    .mesh/demo/.
    """
    low, _, high = latency_ms.partition("-")
    if not (low.isdigit() and (high or low).isdigit() and int(low) <= int(high or low)):
        raise InputError(f"--latency-ms {latency_ms!r}: expected LOW-HIGH in milliseconds")
    options = DemoOptions(
        requests=requests,
        failure_rate=failure_rate,
        latency_ms=(int(low), int(high or low)),
        workers=workers,
        crash_worker=crash_worker,
        timeout_s=timeout,
        keep_stack=keep_stack,
    )
    settings = load_settings(
        config_file, bootstrap_servers=bootstrap_servers, registry_url=registry_url
    )
    try:
        if as_json:
            report = run_demo(options, settings, on_note=lambda n: err_console.print(escape(n)))
            print(json.dumps(report.to_json()))
        else:
            report = _run_live(options, settings)
            _summary(report)
    except KeyboardInterrupt:
        err_console.print("\n[yellow]interrupted[/]: stopped every process the demo started")
        raise typer.Exit(130) from None
    raise typer.Exit(0 if report.ok else 1)


def _run_live(options: DemoOptions, settings: Settings) -> DemoReport:
    started = time.monotonic()
    with Live(console=console, refresh_per_second=4, transient=False) as live:

        def show(status: RunStatus) -> None:
            live.update(_view(status, time.monotonic() - started))

        def note(text: str) -> None:
            live.console.print(f"[dim]{time.monotonic() - started:5.1f}s[/] {escape(text)}")

        return run_demo(options, settings, on_status=show, on_note=note)


def _view(status: RunStatus, elapsed_s: float) -> Group:
    total = len(status.requests)
    headline = Text.from_markup(
        f"[bold]{status.completed}[/]/{total} completed   "
        f"[cyan]{status.in_flight}[/] in flight   "
        f"[yellow]{status.retries}[/] retries   "
        f"[red]{status.dead_letters}[/] dead letters   "
        f"[dim]{elapsed_s:.0f}s[/]"
    )
    table = Table("agent", "received", "emitted", "emitted/s", "retries", "dead letters")
    now = time.monotonic()
    for name, activity in sorted(status.agents.items()):
        table.add_row(
            name,
            str(activity.received),
            str(activity.emitted),
            f"{activity.rate(now):.1f}",
            str(activity.retries),
            str(activity.dead_letters),
        )
    return Group(headline, table)


def _summary(report: DemoReport) -> None:
    status = report.status
    total = len(status.requests)
    verdict = "[green]nothing lost[/]" if report.ok else "[red]requests unaccounted for[/]"
    console.print(f"\n[bold]mesh demo[/] run {report.run_id}: {verdict}")
    table = Table(show_header=False, box=None)
    table.add_row("completed", f"{status.completed}/{total} requests")
    table.add_row(
        "dead-lettered", f"{len(status.failed)} requests ({status.dead_letters} dead letters)"
    )
    if status.in_flight:
        table.add_row("unaccounted", f"[red]{status.in_flight}[/] requests")
    table.add_row("events handled", f"{status.handled} (retries: {status.retries})")
    p50, p99 = status.percentile_ms(50), status.percentile_ms(99)
    if p50 is not None and p99 is not None:
        table.add_row("end-to-end latency", f"p50 {p50 / 1000:.2f}s   p99 {p99 / 1000:.2f}s")
    if report.killed:
        table.add_row(
            "crash",
            f"worker {report.killed[0]} SIGKILLed, worker {report.replacements[0]} took over",
        )
    table.add_row("took", f"{report.elapsed_s:.1f}s on {report.stack}")
    if report.console_url is not None and report.stack_kept and report.embedded:
        table.add_row("console", f"{report.console_url} (still running)")
    table.add_row("worker logs", str(report.log_dir))
    console.print(table)
    console.print("\nLook deeper:")
    for line in _hints(report):
        console.print(f"  {line}", soft_wrap=True)


def _hints(report: DemoReport) -> list[str]:
    """Commands that look into this run's topics (while its stack still runs)."""
    lines = []
    settings = report.settings
    if not report.stack_kept:
        lines.append("[dim]# the run's broker is gone: rerun with --keep-stack for these[/]")
    elif report.embedded and settings is not None:
        lines.append(
            f"export MESH_BOOTSTRAP_SERVERS={settings.bootstrap_servers} "
            f"MESH_REGISTRY_URL={settings.registry_url}"
        )
    lines.append(f"mesh dlq list --app {APP_SPEC}")
    example = report.trace_example()
    if example is not None:
        lines.append(f"mesh trace {example}")
        lines.append(f"mesh replay research.findings --from-beginning --correlation-id {example}")
    if report.stack_kept and report.embedded:
        lines.append(
            f"mesh dev down --state-dir {report.log_dir}   [dim]# stops the stack and console[/]"
        )
    return lines
