"""``mesh dlq``: list, show and redrive dead letters (the library is :mod:`mesh.ops.dlq`)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, TaskID
from rich.table import Column, Table
from rich.text import Text

__all__ = ["app"]

from mesh.cli._console import console, err_console
from mesh.cli._options import (
    AsJson,
    BootstrapServers,
    ConfigFile,
    Execute,
    Limit,
    RegistryUrl,
    app_option,
    client_settings,
    load_app_option,
)
from mesh.config import Settings, parse_duration
from mesh.errors import InputError
from mesh.headers import EXCEPTION_STACKTRACE
from mesh.ops.dlq import (
    DeadLetter,
    DeadLetterFilter,
    OnRead,
    dead_letter_topics,
    iso,
    read_by_id,
    read_dead_letters,
    read_one,
    redrive,
)
from mesh.runtime.failure import DeadLetterReason

app = typer.Typer(
    help="Dead letters: records agents gave up on. List, inspect, send back.",
    no_args_is_help=True,
)

_MESSAGE_CHARS = 60  # of an error message, in a table row or a block

AppSpec = Annotated[str | None, app_option("App whose dead letters to read.")]
Agent = Annotated[str | None, typer.Option("--agent", "-a", help="Only this agent's.")]
Topic = Annotated[
    str | None, typer.Option("--topic", "-t", help="Read this dead-letter topic (no --app).")
]
Since = Annotated[
    str | None, typer.Option("--since", help="Only those failed within, e.g. 30m, 1h, 2d.")
]
ErrorClass = Annotated[
    str | None,
    typer.Option("--error-class", help="Only this exception class (qualified, or its tail)."),
]
Reason = Annotated[
    str | None,
    typer.Option(
        "--reason",
        help=f"Only those dead-lettered for this reason: {', '.join(DeadLetterReason)}.",
    ),
]


@app.command("list")
def list_(
    *,
    app_spec: AppSpec = None,
    agent: Agent = None,
    topic: Topic = None,
    since: Since = None,
    error_class: ErrorClass = None,
    reason: Reason = None,
    limit: Limit = None,
    as_json: AsJson = False,
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """List dead letters (oldest first per topic): why each failed, and whether it was
    redriven (when, and to which topic)."""
    _, topics, letters = _selected(
        bootstrap_servers=bootstrap_servers,
        registry_url=registry_url,
        app_spec=app_spec,
        agent=agent,
        topic=topic,
        since=since,
        error_class=error_class,
        reason=reason,
        limit=limit,
        config_file=config_file,
    )
    if as_json:
        for letter in letters:
            print(json.dumps(letter.summary()))
        return
    _print_letters(letters)
    err_console.print(f"{len(letters)} dead letter(s) in {len(topics)} topic(s)")


@app.command("show")
def show(
    *,
    letter_id: Annotated[
        str, typer.Argument(metavar="ID", help="DLQ_TOPIC:PARTITION:OFFSET, as listed.")
    ],
    as_json: AsJson = False,
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """Everything about one dead letter: why it failed (with the trace), headers, key, value."""
    settings = client_settings(
        config_file, bootstrap_servers=bootstrap_servers, registry_url=registry_url, registry=True
    )
    letter, record = read_one(settings, letter_id)
    data = {
        **letter.summary(),
        "error_trace": letter.header(EXCEPTION_STACKTRACE),
        **record.to_json(),
    }
    if as_json:
        print(json.dumps(data))
        return
    for name in (
        "id",
        "agent",
        "group",
        "reason",
        "error_kind",
        "error_class",
        "error_message",
        "attempts",
    ):
        console.print(f"[bold]{name}:[/] {escape(str(data[name]))}", soft_wrap=True)
    original = f"{data['original_topic']}:{data['original_partition']}:{data['original_offset']}"
    console.print(f"[bold]original:[/] {escape(original)}", soft_wrap=True)
    for name in (
        "original_timestamp",
        "first_failure",
        "failed_at",
        "correlation_id",
        "event_type",
    ):
        console.print(f"[bold]{name}:[/] {escape(str(data[name]))}", soft_wrap=True)
    console.print(f"[bold]redrive_count:[/] {data['redrive_count']}")
    console.print(f"[bold]redriven:[/] {escape(_redriven(letter))}", soft_wrap=True)
    console.print(f"[bold]key:[/] {escape(str(data['key']))}", soft_wrap=True)
    console.print("[bold]headers:[/]")
    for name, value in data["headers"].items():
        console.print(f"  {escape(name)}: {escape(_one_line(value))}", soft_wrap=True)
    if record.value_error is not None:
        console.print(f"[bold red]value_error:[/] {escape(record.value_error)}", soft_wrap=True)
        console.print(f"[bold]value_base64:[/] {data['value_base64']}", soft_wrap=True)
    else:
        console.print(f"[bold]value:[/] {escape(json.dumps(data['value'], indent=2))}")
    console.print("[bold]error_trace:[/]")
    console.print(escape(data["error_trace"] or "-"), soft_wrap=True)


@app.command("redrive")
def redrive_(
    *,
    letter_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="[ID]...", help="Dead letters to send, as listed (or filter)."),
    ] = None,
    app_spec: AppSpec = None,
    agent: Agent = None,
    topic: Topic = None,
    since: Since = None,
    error_class: ErrorClass = None,
    reason: Reason = None,
    limit: Limit = None,
    to_topic: Annotated[
        str | None,
        typer.Option("--to-topic", help="Send here instead of each one's original topic."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Also send dead letters redriven before.")
    ] = False,
    execute: Execute = False,
    max_redrives: Annotated[
        int, typer.Option("--max-redrives", min=1, help="Skip records redriven this often.")
    ] = 3,
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """Send dead letters back to their original topic for a fresh set of attempts.

    Name them by ID, or select them with --app/--topic and the filters. Each one sent is
    marked redriven (`mesh dlq list` shows it); a marked one is sent again only with
    --force. Every consumer group of the original topic sees them again.
    """
    filters = {
        "--agent": agent,
        "--topic": topic,
        "--since": since,
        "--error-class": error_class,
        "--reason": reason,
        "--limit": limit,
    }
    if letter_ids:
        given = [name for name, value in filters.items() if value is not None]
        if given:
            raise InputError(f"give dead letter ids or filters, not both ({', '.join(given)})")
        settings = client_settings(
            config_file, bootstrap_servers=bootstrap_servers, registry_url=registry_url
        )
        letters = read_by_id(settings, letter_ids)
    else:
        settings, _, letters = _selected(
            bootstrap_servers=bootstrap_servers,
            registry_url=registry_url,
            app_spec=app_spec,
            agent=agent,
            topic=topic,
            since=since,
            error_class=error_class,
            reason=reason,
            limit=limit,
            config_file=config_file,
        )
    report = redrive(
        settings,
        letters,
        max_redrives=max_redrives,
        execute=execute,
        force=force,
        to_topic=to_topic,
    )
    verb = "would send" if report.dry_run else "sent"
    for letter in report.sent:
        target = letter.redriven.to_topic if letter.redriven else "?"
        console.print(
            f"{verb} {escape(letter.id)} -> {escape(target)} (redrive {letter.redrive_count + 1})",
            soft_wrap=True,
        )
    for letter, why in report.skipped:
        console.print(f"skipped {escape(letter.id)}: {escape(why)}", soft_wrap=True)
    for letter in report.already:
        err_console.print(
            f"[yellow]warning:[/] {escape(letter.id)} was redriven before "
            f"({escape(_redriven(letter))}); not sent again without --force",
            soft_wrap=True,
        )
    for letter, why in report.failed:
        err_console.print(f"[red]failed[/] {escape(letter.id)}: {escape(why)}", soft_wrap=True)
    for letter, why in report.unmarked:
        err_console.print(
            f"[yellow]warning:[/] {escape(letter.id)} was sent but not marked redriven: "
            f"{escape(why)}",
            soft_wrap=True,
        )
    skipped = len(report.skipped) + len(report.already)
    console.print(
        f"matched {report.matched}, {verb} {len(report.sent)}, skipped {skipped}"
        + (f", failed {len(report.failed)}" if report.failed else "")
        + (" (dry run: add --execute to send)" if report.dry_run and report.sent else "")
    )
    if report.failed:
        raise typer.Exit(1)


def _selected(
    *,
    bootstrap_servers: str | None,
    registry_url: str | None,
    app_spec: str | None,
    agent: str | None,
    topic: str | None,
    since: str | None,
    error_class: str | None,
    reason: str | None,
    limit: int | None,
    config_file: Path | None,
) -> tuple[Settings, list[str], list[DeadLetter]]:
    """Settings, dead-letter topics, and the letters the common options select there; bad
    input raises."""
    since_ms = None
    if since is not None:
        try:
            since_ms = int((time.time() - parse_duration(since)) * 1000)
        except ValueError as exc:
            raise InputError(f"--since {since}: {exc}") from None
    reasons = [r.value for r in DeadLetterReason]
    if reason is not None and reason not in reasons:
        raise InputError(f"--reason {reason}: use one of {', '.join(reasons)}")
    mesh_app = load_app_option(app_spec if topic is None else None)
    settings = client_settings(
        config_file, bootstrap_servers=bootstrap_servers, registry_url=registry_url, app=mesh_app
    )
    topics = dead_letter_topics(settings, app=mesh_app, agent=agent, topic=topic)
    where = DeadLetterFilter(
        since_ms=since_ms,
        error_class=error_class,
        agent=agent if mesh_app is None else None,
        reason=None if reason is None else DeadLetterReason(reason),
    )
    with _progress() as on_read:
        letters = read_dead_letters(settings, topics, where=where, limit=limit, on_read=on_read)
        return settings, topics, list(letters)


@contextmanager
def _progress() -> Iterator[OnRead | None]:
    """A progress bar per topic on stderr when it is a terminal; nothing otherwise."""
    if not err_console.is_terminal:
        yield None
        return
    with Progress(console=err_console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def on_read(topic: str, read: int, total: int) -> None:
            if topic not in tasks:
                tasks[topic] = bar.add_task(topic, total=total)
            bar.update(tasks[topic], completed=read)

        yield on_read


def _print_letters(letters: list[DeadLetter]) -> None:
    """One table row per dead letter when the rows fit the width, else a short block each.

    Piped with no COLUMNS set, the table is never cut to a width (a row per line stays
    greppable). At 80 columns a row cannot hold a whole id (what `show` and `redrive`
    take) and a readable error beside it, so each letter gets its own lines instead.
    """
    table = _table(letters)
    natural = console.measure(table, options=console.options.update_width(100_000)).maximum
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        Console(highlight=False, width=natural).print(table)
        return
    if not letters or natural <= console.width:
        console.print(table)
        return
    for letter in letters:
        _print_block(letter)


def _table(letters: list[DeadLetter]) -> Table:
    table = Table(
        "agent",
        "reason",
        "kind",
        "class",
        "message",
        "attempts",
        "failed at",
        "correlation",
        "redriven",
    )
    # The id goes first and whole (never wrapped): it is what `show` and filters take.
    width = max((len(letter.id) for letter in letters), default=2)
    table.columns.insert(0, Column("id", no_wrap=True, min_width=width))
    for letter in letters:
        row = letter.summary()
        table.add_row(
            *(
                escape(str(v if v is not None else "-"))
                for v in (
                    row["id"],
                    row["agent"],
                    row["reason"],
                    row["error_kind"],
                    row["error_class"],
                    _cut(row["error_message"] or "", _MESSAGE_CHARS),
                    row["attempts"],
                    row["failed_at"],
                    row["correlation_id"],
                    _redriven(letter),
                )
            )
        )
    return table


def _print_block(letter: DeadLetter) -> None:
    """A dead letter in five lines or so: the id whole on its own line (folded only when
    it is wider than the screen itself), the rest indented, wrapped at words."""
    row = letter.summary()
    reason, kind = row["reason"] or "-", row["error_kind"] or "-"
    attempts = row["attempts"] if row["attempts"] is not None else "?"
    message = _cut(row["error_message"] or "", _MESSAGE_CHARS)
    redriven = f", redriven {_redriven(letter)}" if letter.redriven else ""
    body = [
        f"{escape(str(row['agent'] or '-'))}  [red]{escape(reason)}[/]"
        + (f" ({escape(kind)})" if kind != reason else "")
        + f" after {attempts} attempt(s)",
        f"{escape(row['error_class'] or '-')}: {escape(message)}",
        f"failed {escape(str(row['failed_at']))}{escape(redriven)}",
        f"correlation {escape(row['correlation_id'] or '-')}",
    ]
    console.print(f"[bold]{escape(letter.id)}[/]", overflow="fold")
    for markup in body:
        for line in Text.from_markup(markup).wrap(console, max(console.width - 2, 20)):
            line.rstrip()
            console.print(Text("  ") + line, soft_wrap=True)


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def _redriven(letter: DeadLetter) -> str:
    if letter.redriven is None:
        return "-"
    return f"{iso(letter.redriven.at_ms)} to {letter.redriven.to_topic}"


def _one_line(value: str | None) -> str:
    return "-" if value is None else value.replace("\n", "\\n")
