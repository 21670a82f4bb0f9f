"""``mesh schema``: the ``.avsc`` files of ``schemas/``, generated from the event types."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mesh.cli._app import import_from_cwd
from mesh.cli._console import console
from mesh.errors import SchemaError
from mesh.schema import SCHEMA_DIR, find_event_types, generate_schemas

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
