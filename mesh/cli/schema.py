"""``mesh schema``: the ``.avsc`` files of ``schemas/``, generated from the event types,
checked against git or a registry, and registered."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from confluent_kafka.schema_registry import SchemaRegistryClient
from rich.markup import escape
from rich.table import Table

from mesh.cli._console import console, err_console
from mesh.cli._options import ConfigFile, RegistryUrl, app_option, client_settings
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


_DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Where the .avsc files live (default: the app's, else schemas/)."),
]
_AppOption = Annotated[
    str | None,
    app_option('The app whose event types name the subjects (default: app = "..." in mesh.toml).'),
]
_ModuleOption = Annotated[
    list[str] | None,
    typer.Option(
        "--module",
        "-m",
        help="Module or package whose event types count too (repeatable).",
    ),
]
_ConfigOption = ConfigFile


@app.command("gen")
def gen(
    *,
    app_spec: _AppOption = None,
    modules: _ModuleOption = None,
    schema_dir: _DirOption = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check", help="Write nothing; exit 1 when a file is missing or out of date."
        ),
    ] = False,
    config_file: _ConfigOption = None,
) -> None:
    """Write <namespace>.<Name>.avsc for every event type of the app (or the modules)."""
    project = _project(load_settings(config_file), app_spec, modules, schema_dir)
    if not project.event_types:
        raise SchemaError(f"no event types (subclasses of mesh.Event) in {project.source}")
    results = generate_schemas(project.event_types.values(), project.schema_dir, check=check)
    for result in results:
        style = _STYLE[result.state]
        console.print(f"[{style}]{result.state:<9}[/] {escape(str(result.path))}", soft_wrap=True)
        for line in result.differences:
            console.print(f"            - {escape(line)}", soft_wrap=True)
    stale = [r for r in results if r.state in ("missing", "drifted")]
    if stale:
        command = " ".join(["mesh schema gen", *(f"--module {m}" for m in modules or ())])
        console.print(
            f"{len(stale)} schema file(s) out of date: run `{command}`",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)


class Format(StrEnum):
    TABLE = "table"
    JSON = "json"
    MARKDOWN = "markdown"


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
    allow_no_base: Annotated[
        bool,
        typer.Option(
            "--allow-no-base",
            help="Without git history, pass with every schema new (refused in CI without it).",
        ),
    ] = False,
    schema_dir: _DirOption = None,
    app_spec: _AppOption = None,
    modules: _ModuleOption = None,
    config_file: _ConfigOption = None,
) -> None:
    """Check every .avsc against the earlier versions of its subject; exit 1 if incompatible.

    Subjects are named as the runtime names them, from the topics of the app's event
    types (app = "module:app" in mesh.toml). Prints unchanged / compatible /
    INCOMPATIBLE (with avro.compatibility's reason and field path), new and deleted per
    subject. Exit 2 on an invalid .avsc, an .avsc of no known event type, or bad input.
    """
    if against and against_registry:
        raise InputError("give --against or --against-registry, not both")
    settings = load_settings(config_file)
    project = _project(settings, app_spec, modules, schema_dir)
    levels = Levels.load(project.schema_dir)
    if against_registry:
        client = SchemaRegistryClient({**settings.registry_config(), "url": against_registry})
        report = check_against_registry(
            project.schema_dir, client, naming=project.naming, levels=levels, level=level
        )
    else:
        ref = against or default_ref()
        if ref is None:
            _no_base(allow=allow_no_base)
        report = check_against_git(
            project.schema_dir,
            ref,
            naming=project.naming,
            levels=levels,
            level=level,
            in_use=project.event_types,
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
    execute: Annotated[
        bool,
        typer.Option("--execute/--dry-run", help="Register (default: say what would be)."),
    ] = False,
    schema_dir: _DirOption = None,
    app_spec: _AppOption = None,
    modules: _ModuleOption = None,
    registry_url: RegistryUrl = None,
    config_file: _ConfigOption = None,
) -> None:
    """Register every .avsc whose subject does not hold it yet (dependencies first).

    A dry run unless --execute. Subjects are named as `mesh schema check` names them.
    """
    settings = _registry_settings(config_file, registry_url)
    project = _project(settings, app_spec, modules, schema_dir)
    schemas = read_schema_dir(project.schema_dir)
    style = {"unchanged": "dim", "registered": "green", "would register": "yellow"}
    results = register_schemas(
        _client(settings),
        schemas,
        naming=project.naming,
        levels=Levels.load(project.schema_dir),
        dry_run=not execute,
        progress=lambda r: console.print(
            f"[{style[r.state]}]{r.state:<14}[/] {escape(r.subject)}"
            + (f" v{r.version} (id {r.schema_id})" if r.version is not None else "")
            + (f" [dim]refs {escape(', '.join(r.references))}[/]" if r.references else "")
            + f" [dim]{escape(r.path)}[/]",
            soft_wrap=True,
        ),
    )
    changed = sum(r.state != "unchanged" for r in results)
    verb = "registered" if execute else "would register"
    dry = "" if execute or not changed else " (dry run: add --execute to register)"
    console.print(f"{verb} {changed} of {len(results)} schema(s){dry}", markup=False)


@app.command("list")
def list_(registry_url: RegistryUrl = None, config_file: _ConfigOption = None) -> None:
    """Every subject in the registry with its live versions."""
    table = Table("subject", "versions", "latest id", box=None)
    for info in list_subjects(_client(_registry_settings(config_file, registry_url))):
        versions = ", ".join(map(str, info.versions))
        table.add_row(escape(info.subject), versions, str(info.latest_id))
    console.print(table)


@app.command("show")
def show(
    subject: Annotated[str, typer.Argument(help="Registry subject, e.g. answers-value.")],
    version: Annotated[
        int | None, typer.Option("--version", "-v", min=1, help="Version (default: latest).")
    ] = None,
    registry_url: RegistryUrl = None,
    config_file: _ConfigOption = None,
) -> None:
    """Print one version of SUBJECT: its id, references and schema."""
    settings = _registry_settings(config_file, registry_url)
    registered = show_version(_client(settings), subject, version)
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
    registry_url: RegistryUrl = None,
    config_file: _ConfigOption = None,
) -> None:
    """Field by field, how two versions of SUBJECT differ."""
    client = _client(_registry_settings(config_file, registry_url))
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


@dataclass(frozen=True)
class _Project:
    """What the repository declares: its event types, their subjects, their .avsc files."""

    event_types: dict[str, type[Event]]
    naming: Naming
    schema_dir: Path
    #: Where the event types came from, in words.
    source: str


def _project(
    settings: Settings, app_spec: str | None, modules: list[str] | None, schema_dir: Path | None
) -> _Project:
    """The app's event types (--app, else `app` in mesh.toml or MESH_APP) and the modules'.

    The .avsc files are where the runtime reads them: the app's ``schemas_dir``.
    """
    spec = app_spec or settings.app
    event_types: dict[str, type[Event]] = {}
    sources = []
    default_dir = SCHEMA_DIR
    if spec:
        declared = load_app(spec)
        event_types.update(declared.event_types)
        default_dir = declared.schemas_dir
        sources.append(f"app {spec}")
    if modules:
        import_from_cwd()
        event_types.update({t.event_type(): t for t in find_event_types(modules)})
        sources.append(f"module {', '.join(modules)}")
    source = " and ".join(sources)
    missing = f"{source} declares no event type of that name" if source else "no app is declared"
    strategy = SubjectStrategy(settings.subject_strategy)
    naming = Naming.of(strategy, event_types.values(), missing)
    chosen = schema_dir or default_dir
    if chosen.is_absolute() and chosen.is_relative_to(Path.cwd()):  # shorter in reports
        chosen = chosen.relative_to(Path.cwd())
    return _Project(event_types, naming, chosen, source or "no app")


def _no_base(*, allow: bool) -> None:
    """No git history to compare with: nothing can be checked, so say it (and fail in CI)."""
    message = (
        "no git history to compare with (no origin/main, no HEAD~1): every schema counts "
        "as new and no change was checked. Fetch the history (actions/checkout with "
        "fetch-depth: 0) or name a base with --against REF"
    )
    if not allow and os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        raise InputError(f"{message}; --allow-no-base passes anyway (CI is set)")
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}", soft_wrap=True)


def _registry_settings(config_file: Path | None, registry_url: str | None) -> Settings:
    """Settings for a command that talks to the registry only (never to Kafka): the
    registry found as every client command finds it (the running dev stack too), checked
    to answer."""
    return client_settings(config_file, registry_url=registry_url, broker=False, registry=True)


def _client(settings: Settings) -> SchemaRegistryClient:
    err_console.print(f"registry {escape(redact_url(settings.registry_url))}", soft_wrap=True)
    return SchemaRegistryClient(settings.registry_config())
