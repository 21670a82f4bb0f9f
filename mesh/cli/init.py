"""``mesh init [DIR]``: scaffold a project whose tests pass as generated."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from mesh.cli._console import console
from mesh.dev.scaffold import package_name, scaffold

__all__ = ["init"]


def init(
    directory: Annotated[
        Path, typer.Argument(help="Where to create the project (absent or empty).")
    ] = Path(),
    name: Annotated[
        str | None,
        typer.Option("--name", help="The project's Python package (default: from DIR's name)."),
    ] = None,
) -> None:
    """Create a project: event types, an app with two agents, mesh.toml, schemas/, tests
    and a GitHub workflow running the schema gate and the tests.

    Exit 2 when DIR holds files already.
    """
    package = name or package_name(directory)
    for path in scaffold(directory, package):
        console.print(f"[green]created[/] {escape(str(path))}", soft_wrap=True)
    console.print(
        f"\nnext: cd {directory} && pip install -e '.[test]' && pytest",
        markup=False,
        soft_wrap=True,
    )
