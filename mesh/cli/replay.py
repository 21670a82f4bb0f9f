"""``mesh replay`` (re-consume history into a sink) and ``mesh replay reset-group``.

The libraries are :mod:`mesh.ops.replay`, :mod:`mesh.ops.sinks` and :mod:`mesh.ops.reset`.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from confluent_kafka.admin import AdminClient
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table
from typer.core import TyperGroup

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
)
from mesh.config import Settings, parse_duration
from mesh.dev.loader import load_app
from mesh.errors import ConfigError, InputError
from mesh.kafka.clients import admin_config
from mesh.kafka.topics import existing_topics
from mesh.ops.replay import (
    ONE_END,
    ONE_START,
    OnProgress,
    RecordFilter,
    ReplaySummary,
    Sink,
    StartAt,
    StopAt,
    parse_source,
    parse_time_ms,
    plan_replay,
    replay,
)
from mesh.ops.reset import ResetPlan, ResetTo, apply_reset, plan_reset, read_offsets_csv
from mesh.ops.sinks import AgentSink, LineSink, TopicSink
from mesh.runtime.app import Mesh
from mesh.serde import Serde

__all__ = ["app"]


class _ReplayGroup(TyperGroup):
    """``mesh replay SOURCE ...`` runs the group itself; ``mesh replay reset-group`` a command.

    A click group would take ``reset-group`` for its SOURCE argument (route it first), and
    the options after SOURCE for a command's (parse them as the group's own).
    """

    allow_interspersed_args = True

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] in self.commands:
            super().parse_args(ctx, [])
            ctx._protected_args, ctx.args = args[:1], args[1:]
            return ctx.args
        return super().parse_args(ctx, args)


app = typer.Typer(cls=_ReplayGroup, invoke_without_command=True, no_args_is_help=False)


@app.callback()
def replay_(
    ctx: typer.Context,
    *,
    source: Annotated[
        str | None,
        typer.Argument(metavar="SOURCE", help="TOPIC or TOPIC:0,2 (or use --dlq AGENT)."),
    ] = None,
    dlq: Annotated[
        str | None, typer.Option("--dlq", metavar="AGENT", help="Read AGENT's dead letters.")
    ] = None,
    app_spec: Annotated[str | None, app_option("App of --dlq.")] = None,
    from_beginning: Annotated[bool, typer.Option("--from-beginning")] = False,
    from_offset: Annotated[
        int | None, typer.Option("--from-offset", help="Per partition; -N: N before the end.")
    ] = None,
    from_time: Annotated[
        str | None, typer.Option("--from-time", help="ISO-8601 with zone, or epoch ms.")
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="That long ago, e.g. 2h.")] = None,
    from_group: Annotated[
        str | None, typer.Option("--from-group", help="At this group's committed offsets.")
    ] = None,
    to_offset: Annotated[
        int | None, typer.Option("--to-offset", help="Per partition, exclusive.")
    ] = None,
    to_time: Annotated[str | None, typer.Option("--to-time", help="Exclusive.")] = None,
    limit: Limit = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep reading new records.")] = False,
    idle_timeout: Annotated[
        str,
        typer.Option(
            "--idle-timeout", help="Stop (exit 1) after this long without a record before the end."
        ),
    ] = "30s",
    key: Annotated[str | None, typer.Option("--key", help="Only this key.")] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="Only with header k=v (repeat).")
    ] = None,
    event_type: Annotated[str | None, typer.Option("--event-type")] = None,
    correlation_id: Annotated[str | None, typer.Option("--correlation-id")] = None,
    error_class: Annotated[
        str | None, typer.Option("--error-class", help="Dead letters: qualified or its tail.")
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Dead letters: exhausted, fatal, ...")
    ] = None,
    to_stdout: Annotated[bool, typer.Option("--to-stdout", help="The default sink.")] = False,
    fmt: Annotated[
        Literal["json", "raw"],
        typer.Option("--format", help="stdout: json (decoded) or raw (base64)."),
    ] = "json",
    to_topic: Annotated[
        str | None, typer.Option("--to-topic", help="Copy byte for byte into this topic.")
    ] = None,
    max_replays: Annotated[
        int, typer.Option("--max-replays", min=1, help="--to-topic: skip records replayed N times.")
    ] = 3,
    to_agent: Annotated[
        str | None,
        typer.Option("--to-agent", metavar="MODULE:APP:AGENT", help="Run this handler on each."),
    ] = None,
    emit_to_topic: Annotated[
        str | None, typer.Option("--emit-to-topic", help="--to-agent: where its emits go.")
    ] = None,
    execute: Execute = False,
    rate: Annotated[
        str | None, typer.Option("--rate", help="At most N records/s, e.g. 100/s.")
    ] = None,
    as_json: AsJson = False,
    bootstrap_servers: BootstrapServers = None,
    registry_url: RegistryUrl = None,
    config_file: ConfigFile = None,
) -> None:
    """Re-consume history from Kafka and send it to stdout, a topic or an agent, safely.

    Default range: from the beginning up to the end seen at the start (so a run always
    ends). Filters combine with AND. Writing to Kafka is a dry run unless --execute.
    """
    if ctx.invoked_subcommand is not None:
        return
    sinks = sum(map(bool, (to_stdout, to_topic, to_agent)))
    if sinks > 1:
        raise InputError("give one sink: --to-stdout, --to-topic or --to-agent")
    if follow and limit is not None:
        raise InputError(ONE_END)
    starts = [from_time, since]
    if sum(v is not None for v in starts) > 1:
        raise InputError(ONE_START)
    mesh_app, agent_app = _apps(app_spec, to_agent)
    settings = client_settings(
        config_file, bootstrap_servers=bootstrap_servers, registry_url=registry_url, app=mesh_app
    )
    topic, partitions = _source(settings, source, dlq, mesh_app)
    start_ms = None
    if from_time is not None:
        start_ms = parse_time_ms(from_time, option="--from-time")
    elif since is not None:
        start_ms = int((time.time() - _seconds(since, "--since")) * 1000)
    start = StartAt(
        beginning=from_beginning, offset=from_offset, time_ms=start_ms, group=from_group
    )
    stop = StopAt(
        offset=to_offset,
        time_ms=None if to_time is None else parse_time_ms(to_time, option="--to-time"),
        follow=follow,
    )
    where = RecordFilter(
        key=None if key is None else key.encode(),
        headers=_headers(header or []),
        event_type=event_type,
        correlation_id=correlation_id,
        error_class=error_class,
        reason=reason,
    )
    rate_per_s = None if rate is None else _rate(rate)
    plan = plan_replay(settings, topic, partitions=partitions, start=start, stop=stop)
    serde = Serde.from_settings(settings)
    sink: Sink
    if to_topic is not None:
        sink = TopicSink(
            settings,
            to_topic,
            source_partitions=len(plan.ranges),
            max_replays=max_replays,
            execute=execute,
            serde=serde,
        )
    elif to_agent is not None:
        assert agent_app is not None
        sink = AgentSink(
            settings,
            agent_app,
            to_agent.rsplit(":", 1)[1],
            emit_to=emit_to_topic,
            execute=execute,
            out=sys.stdout,
            serde=serde,
        )
    else:
        sink = LineSink(sys.stdout, fmt=fmt, serde=serde)
    with _progress(enabled=not as_json) as on_progress:
        summary = replay(
            settings,
            plan,
            sink,
            where=where,
            count=limit,
            rate_per_s=rate_per_s,
            on_progress=on_progress,
            idle_timeout_s=_seconds(idle_timeout, "--idle-timeout"),
        )
    _report(summary, as_json=as_json, records_on_stdout=isinstance(sink, LineSink))
    if summary.failed or summary.incomplete:
        raise typer.Exit(1)


def _apps(app_spec: str | None, to_agent: str | None) -> tuple[Mesh | None, Mesh | None]:
    """The app of --dlq (--app, else --to-agent's), and the app of --to-agent."""
    agent_app = None
    if to_agent is not None:
        if to_agent.count(":") != 2:
            raise InputError(f"--to-agent {to_agent!r}: use MODULE:APP:AGENT")
        agent_app = _load(to_agent.rsplit(":", 1)[0])
    mesh_app = _load(app_spec) if app_spec is not None else agent_app
    return mesh_app, agent_app


def _load(spec: str) -> Mesh:
    try:
        return load_app(spec)
    except ConfigError as exc:
        raise InputError(f"{spec}: {exc}") from None


def _source(
    settings: Settings, source: str | None, dlq: str | None, mesh_app: Mesh | None
) -> tuple[str, list[int] | None]:
    if (source is None) == (dlq is None):
        raise InputError("name one source: a TOPIC (or TOPIC:0,2), or --dlq AGENT")
    if source is not None:
        return parse_source(source)
    assert dlq is not None
    if mesh_app is None:
        raise InputError("--dlq AGENT needs --app MODULE:APP (or MESH_APP), or name the topic")
    if dlq not in mesh_app.agents:
        known = ", ".join(mesh_app.agents) or "none"
        raise InputError(f"app {mesh_app.name!r} has no agent {dlq!r}; its agents are: {known}")
    present = existing_topics(AdminClient(admin_config(settings)))
    topics = list(mesh_app.topology(dlq).dead_letters)
    found = [t for t in topics if t in present]
    if len(found) != 1:
        listed = ", ".join(topics)
        what = "none exists yet" if not found else "name one as SOURCE"
        raise InputError(f"agent {dlq!r} dead-letters to {listed}: {what}")
    return found[0], None


def _headers(pairs: list[str]) -> tuple[tuple[str, bytes], ...]:
    found = []
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError(f"--header {pair!r}: use key=value")
        found.append((name, value.encode()))
    return tuple(found)


def _rate(text: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(?:/s)?\s*", text)
    if match is None or float(match.group(1)) <= 0:
        raise InputError(f"--rate {text!r}: use a positive number per second, e.g. 100/s")
    return float(match.group(1))


def _seconds(text: str, option: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise InputError(f"{option} {text}: {exc}") from None


@contextmanager
def _progress(*, enabled: bool) -> Iterator[OnProgress | None]:
    """A progress bar on stderr when it is a terminal; nothing otherwise."""
    if not enabled or not err_console.is_terminal:
        yield None
        return
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("replaying", total=None)

        def on_progress(read: int, total: int | None) -> None:
            bar.update(task, completed=read, total=total)

        yield on_progress


def _report(summary: ReplaySummary, *, as_json: bool, records_on_stdout: bool) -> None:
    """The plan (dry runs) and the summary: on stdout unless records went there."""
    out = err_console if records_on_stdout else console
    if as_json:
        print(json.dumps(summary.to_json()), file=sys.stderr if records_on_stdout else sys.stdout)
        return
    plan = summary.plan
    if summary.dry_run:
        table = Table("partition", "start", "end", "records", title=f"plan: {plan.topic}")
        for r in plan.ranges:
            table.add_row(str(r.partition), str(r.start), str(r.end), str(r.size))
        out.print(table)
        for sample in summary.sample:
            out.print(escape(json.dumps(sample)), soft_wrap=True)
    for problem in summary.problems:
        err_console.print(f"[yellow]{escape(problem)}[/]", soft_wrap=True)
    verb = "would write" if summary.dry_run else "written"
    out.print(
        f"read {summary.read}, matched {summary.matched}, {verb} {summary.written}, "
        f"skipped {summary.skipped}"
        + (f", failed {summary.failed}" if summary.failed else "")
        + f", {summary.seconds:.2f}s"
        + (" (dry run: add --execute to write)" if summary.dry_run else "")
    )


@app.command("reset-group")
def reset_group(
    *,
    group: Annotated[str, typer.Argument(help="The consumer group to move.")],
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", "-t", help="TOPIC or TOPIC:0,2 (repeat); default: its topics."),
    ] = None,
    to_earliest: Annotated[bool, typer.Option("--to-earliest")] = False,
    to_latest: Annotated[bool, typer.Option("--to-latest")] = False,
    to_offset: Annotated[int | None, typer.Option("--to-offset")] = None,
    shift_by: Annotated[
        int | None, typer.Option("--shift-by", help="+N or -N from the committed offset.")
    ] = None,
    to_datetime: Annotated[
        str | None, typer.Option("--to-datetime", help="ISO-8601 with zone, or epoch ms.")
    ] = None,
    by_duration: Annotated[
        str | None, typer.Option("--by-duration", help="That long ago, e.g. 2h.")
    ] = None,
    from_file: Annotated[
        Path | None, typer.Option("--from-file", help="CSV topic,partition,offset.")
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Write the committed offsets before the reset here (CSV): --from-file "
            "with it undoes the reset.",
        ),
    ] = None,
    export_plan: Annotated[
        Path | None, typer.Option("--export-plan", help="Write the new offsets here (CSV).")
    ] = None,
    execute: Execute = False,
    as_json: AsJson = False,
    bootstrap_servers: BootstrapServers = None,
    config_file: ConfigFile = None,
) -> None:
    """Move a group's committed offsets, like kafka-consumer-groups --reset-offsets.

    Shows current -> new per partition; --execute applies (refused while the group has
    active members). Targets outside a partition's range are clamped, with a warning.
    """
    to = _reset_to(
        to_earliest=to_earliest,
        to_latest=to_latest,
        to_offset=to_offset,
        shift_by=shift_by,
        to_datetime=to_datetime,
        by_duration=by_duration,
        from_file=from_file,
    )
    settings = client_settings(config_file, bootstrap_servers=bootstrap_servers)
    plan = plan_reset(settings, group, to, topics=[parse_source(t) for t in topic or []])
    if export is not None:  # before anything moves: the way back
        export.write_text(plan.before_csv())
        if plan.uncommitted:
            plan.warnings.append(
                f"{', '.join(plan.uncommitted)}: no committed offset to export to {export}; "
                "an undo leaves them where this reset puts them"
            )
    if export_plan is not None:
        export_plan.write_text(plan.plan_csv())
    if execute:
        apply_reset(settings, plan)
    if as_json:
        print(json.dumps({**plan.to_json(), "executed": execute}))
        return
    _print_reset(plan, executed=execute)


def _reset_to(
    *,
    to_earliest: bool,
    to_latest: bool,
    to_offset: int | None,
    shift_by: int | None,
    to_datetime: str | None,
    by_duration: str | None,
    from_file: Path | None,
) -> ResetTo:
    given: list[ResetTo] = []
    if to_earliest:
        given.append(ResetTo("earliest"))
    if to_latest:
        given.append(ResetTo("latest"))
    if to_offset is not None:
        given.append(ResetTo("offset", to_offset))
    if shift_by is not None:
        given.append(ResetTo("shift", shift_by))
    if to_datetime is not None:
        given.append(ResetTo("time", parse_time_ms(to_datetime, option="--to-datetime")))
    if by_duration is not None:
        ago_s = _seconds(by_duration, "--by-duration")
        given.append(ResetTo("time", int((time.time() - ago_s) * 1000)))
    if from_file is not None:
        given.append(ResetTo("file", read_offsets_csv(from_file)))
    if len(given) != 1:
        raise InputError(
            "give one target: --to-earliest, --to-latest, --to-offset, --shift-by, "
            "--to-datetime, --by-duration or --from-file"
        )
    return given[0]


def _print_reset(plan: ResetPlan, *, executed: bool) -> None:
    for warning in plan.warnings:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    table = Table("topic", "partition", "current", "new", title=f"group {plan.group}")
    for change in plan.changes:
        current = "-" if change.current is None else str(change.current)
        table.add_row(escape(change.topic), str(change.partition), current, str(change.new))
    console.print(table)
    if executed:
        console.print(f"moved the offsets of {len(plan.changes)} partition(s)")
    elif plan.active:
        console.print(f"group is {plan.state.lower()}: stop its consumers, then --execute")
    else:
        console.print("dry run: add --execute to apply")
