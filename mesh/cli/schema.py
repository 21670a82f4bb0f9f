"""``mesh schema``: the ``.avsc`` files of ``schemas/``, generated from the event types,
checked against git or a registry, and registered."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from confluent_kafka.schema_registry import SchemaRegistryClient
from rich.markup import escape
from rich.table import Table

from mesh.cli._console import console, err_console
from mesh.config import Settings, load_settings, redact_url
from mesh.dev.loader import import_from_cwd, load_app
from mesh.errors import InputError, SchemaError
from mesh.event import Event
from mesh.schema.check import (
    Levels,
    Naming,
    Report,
    SchemaResult,
    check_against_git,
    check_against_registry,
    default_ref,
    read_schema_dir,
)
from mesh.schema.compatibility import CompatibilityLevel
from mesh.schema.files import SCHEMA_DIR, find_event_types, generate_schemas
from mesh.schema.subjects import diff_versions, list_subjects, register_schemas, show_version
from mesh.serde import SubjectStrategy

app = typer.Typer(
    help="Event schemas: the .avsc files in schemas/, generated from the event types.",
    no_args_is_help=True,
)

_STYLE = {
    "unchanged": "dim",
    "created": "green",
    "updated": "yellow",
    "missing": "red",
    "drifted": "red",
}


@app.command("gen")
def gen(
    modules: Annotated[
        list[str],
        typer.Option("--module", "-m", help="Module or package defining event types (repeatable)."),
    ],
    schema_dir: Annotated[
        Path, typer.Option("--dir", help="Where the .avsc files live.")
    ] = SCHEMA_DIR,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Write nothing; exit 1 when a file is missing or out of date."
        ),
    ] = False,
) -> None:
    """Write schemas/<namespace>.<Name>.avsc for every event type of the modules."""
    import_from_cwd()
    event_types = find_event_types(modules)
    if not event_types:
        raise SchemaError(f"no event types (subclasses of mesh.Event) in {', '.join(modules)}")
    results = generate_schemas(event_types, schema_dir, check=check)
    for result in results:
        style = _STYLE[result.state]
        console.print(f"[{style}]{result.state:<9}[/] {escape(str(result.path))}", soft_wrap=True)
        for line in result.differences:
            console.print(f"            - {escape(line)}", soft_wrap=True)
    stale = [r for r in results if r.state in ("missing", "drifted")]
    if stale:
        command = " ".join(f"--module {m}" for m in modules)
        console.print(
            f"{len(stale)} schema file(s) out of date: run `mesh schema gen {command}`",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    MARKDOWN = "markdown"


_DirOption = Annotated[Path, typer.Option("--dir", help="Where the .avsc files live.")]
_AppOption = Annotated[
    str | None,
    typer.Option(
        "--app",
        help="MODULE:APP whose agents' event types are in use (default: scan --module).",
    ),
]
_ModuleOption = Annotated[
    list[str] | None,
    typer.Option(
        "--module",
        "-m",
        help="Module or package whose event types name topics and are in use "
        "(repeatable; default: agents, when it exists).",
    ),
]
_ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="Config file (default: $MESH_CONFIG or ./mesh.toml)."),
]
_VERDICT = {
    "unchanged": ("dim", "unchanged", "▫️"),
    "compatible": ("green", "compatible", "✅"),
    "new": ("cyan", "new", "🆕"),
    "deleted": ("yellow", "deleted", "🗑️"),
    "incompatible": ("bold red", "INCOMPATIBLE", "❌"),
    "deleted-in-use": ("bold red", "DELETED (still used)", "❌"),
}


@app.command("check")
def check(
    *,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="Git ref to compare with (default: merge base with origin/main, else HEAD~1).",
        ),
    ] = None,
    against_registry: Annotated[
        str | None,
        typer.Option(
            "--against-registry", help="Compare with every live version in this registry URL."
        ),
    ] = None,
    level: Annotated[
        CompatibilityLevel | None,
        typer.Option(
            "--level",
            case_sensitive=False,
            help="Level for every subject (default: schemas/compatibility.toml, else BACKWARD).",
        ),
    ] = None,
    output: Annotated[
        Format, typer.Option("--format", case_sensitive=False, help="Output format.")
    ] = Format.TABLE,
    as_json: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
    schema_dir: _DirOption = SCHEMA_DIR,
    app_spec: _AppOption = None,
    modules: _ModuleOption = None,
    config_file: _ConfigOption = None,
) -> None:
    """Check every .avsc against the earlier versions of its subject; exit 1 if incompatible.

    Prints unchanged / compatible / INCOMPATIBLE (with avro.compatibility's reason and
    field path), new and deleted per subject. Exit 2 on an invalid .avsc or bad input.
    """
    if against and against_registry:
        raise InputError("give --against or --against-registry, not both")
    settings = load_settings(config_file)
    event_types = _event_types(app_spec, modules)
    naming = Naming(SubjectStrategy(settings.subject_strategy), event_types)
    levels = Levels.load(schema_dir)
    if against_registry:
        client = SchemaRegistryClient({**settings.registry_config(), "url": against_registry})
        report = check_against_registry(
            schema_dir, client, naming=naming, levels=levels, level=level
        )
    else:
        ref = against or default_ref()
        report = check_against_git(
            schema_dir, ref, naming=naming, levels=levels, level=level, in_use=event_types
        )
    output = Format.JSON if as_json else output
    if output is Format.JSON:
        print(json.dumps(report.to_json(), indent=2))
    elif output is Format.MARKDOWN:
        print(_markdown(report))
    else:
        _print_report(report)
    if report.failed:
        raise typer.Exit(1)


@app.command("register")
def register(
    *,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be registered; change nothing.")
    ] = False,
    schema_dir: _DirOption = SCHEMA_DIR,
    app_spec: _AppOption = None,
    modules: _ModuleOption = None,
    config_file: _ConfigOption = None,
) -> None:
    """Register every .avsc whose subject does not hold it yet (dependencies first)."""
    settings = load_settings(config_file)
    naming = Naming(SubjectStrategy(settings.subject_strategy), _event_types(app_spec, modules))
    schemas = read_schema_dir(schema_dir)
    style = {"unchanged": "dim", "registered": "green", "would register": "yellow"}
    results = register_schemas(
        _client(settings),
        schemas,
        naming=naming,
        levels=Levels.load(schema_dir),
        dry_run=dry_run,
        progress=lambda r: console.print(
            f"[{style[r.state]}]{r.state:<14}[/] {escape(r.subject)}"
            + (f" v{r.version} (id {r.schema_id})" if r.version is not None else "")
            + (f" [dim]refs {escape(', '.join(r.references))}[/]" if r.references else "")
            + f" [dim]{escape(r.path)}[/]",
            soft_wrap=True,
        ),
    )
    changed = sum(r.state != "unchanged" for r in results)
    verb = "would register" if dry_run else "registered"
    console.print(f"{verb} {changed} of {len(results)} schema(s)", markup=False)


@app.command("list")
def list_(config_file: _ConfigOption = None) -> None:
    """Every subject in the registry with its live versions."""
    table = Table("subject", "versions", "latest id", box=None)
    for info in list_subjects(_client(load_settings(config_file))):
        versions = ", ".join(map(str, info.versions))
        table.add_row(escape(info.subject), versions, str(info.latest_id))
    console.print(table)


@app.command("show")
def show(
    subject: Annotated[str, typer.Argument(help="Registry subject, e.g. answers-value.")],
    version: Annotated[
        int | None, typer.Option("--version", "-v", min=1, help="Version (default: latest).")
    ] = None,
    config_file: _ConfigOption = None,
) -> None:
    """Print one version of SUBJECT: its id, references and schema."""
    registered = show_version(_client(load_settings(config_file)), subject, version)
    console.print(
        f"{escape(subject)} version {registered.version} (id {registered.schema_id})",
        soft_wrap=True,
    )
    for ref in registered.schema.references or []:
        console.print(f"  references {ref.name}: {ref.subject} v{ref.version}", markup=False)
    print(json.dumps(json.loads(registered.schema.schema_str or "null"), indent=2))


@app.command("diff")
def diff(
    subject: Annotated[str, typer.Argument(help="Registry subject, e.g. answers-value.")],
    from_version: Annotated[
        int | None, typer.Option("--from", min=1, help="Older version (default: the one before).")
    ] = None,
    to_version: Annotated[
        int | None, typer.Option("--to", min=1, help="Newer version (default: the latest).")
    ] = None,
    config_file: _ConfigOption = None,
) -> None:
    """Field by field, how two versions of SUBJECT differ."""
    client = _client(load_settings(config_file))
    old, new, differences = diff_versions(client, subject, from_version, to_version)
    console.print(f"{escape(subject)}: version {old} -> version {new}", soft_wrap=True)
    for line in differences or ["no differences"]:
        console.print(f"  - {escape(line)}", soft_wrap=True)


def _markdown(report: Report) -> str:
    """GitHub-flavoured markdown for a pull-request comment."""
    failed = [r for r in report.results if r.failed]
    verdict = f"❌ {len(failed)} breaking change(s)" if failed else "✅ no breaking change"
    lines = [
        f"### mesh schema check: {verdict}",
        "",
        f"Compared with {_md(report.baseline)}.",
        "",
        "| | subject | file | level | result |",
        "|---|---|---|---|---|",
    ]
    for r in report.results:
        _, label, icon = _VERDICT[r.status]
        result = f"**{label}**" if r.failed else label
        lines.append(f"| {icon} | `{_md(r.subject)}` | `{_md(r.path)}` | {r.level} | {result} |")
    for r in failed:
        lines += ["", f"#### `{_md(r.subject)}`: {_VERDICT[r.status][1]}", ""]
        lines += [f"- {_md(line)}" for line in _reasons(r)]
    return "\n".join(lines)


def _print_report(report: Report) -> None:
    table = Table("result", "subject", "file", "level", "compared with", box=None)
    for r in report.results:
        style, label, _ = _VERDICT[r.status]
        table.add_row(
            f"[{style}]{label}[/]",
            escape(r.subject),
            escape(r.path),
            r.level.value,
            escape(", ".join(map(str, r.compared_with))),
        )
    console.print(f"against {escape(report.baseline)}", soft_wrap=True)
    console.print(table)
    for r in report.results:
        for line in _reasons(r) if r.failed else []:
            console.print(f"[red]{escape(r.subject)}[/]: {escape(line)}", soft_wrap=True)


def _reasons(result: SchemaResult) -> list[str]:
    if result.status == "deleted-in-use":
        return [f"{result.path} was deleted, but event type {result.name} is still in use"]
    return [str(problem) for problem in result.problems]


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _event_types(app_spec: str | None, modules: list[str] | None) -> dict[str, type[Event]]:
    """Event types by name: the app's agents' ones, else those defined in *modules*."""
    if app_spec:
        return load_app(app_spec).event_types
    if not modules:
        modules = ["agents"] if Path("agents").is_dir() else []
        if not modules:
            return {}
    import_from_cwd()
    return {t.event_type(): t for t in find_event_types(modules)}


def _client(settings: Settings) -> SchemaRegistryClient:
    err_console.print(f"registry {escape(redact_url(settings.registry_url))}", soft_wrap=True)
    return SchemaRegistryClient(settings.registry_config())
