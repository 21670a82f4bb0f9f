"""The ``mesh`` command: one thin module per command group (parse, call the library, print).

``mesh COMMAND ...`` imports only COMMAND's module: ``mesh run`` (a long-lived worker)
then never loads the console, the registry server or the dev tools (about 15 MB it
would hold for nothing). ``mesh --help`` and :data:`app` have every command.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Annotated, Any, NoReturn

import typer
from confluent_kafka import KafkaError, KafkaException
from rich.markup import escape

from mesh import __version__
from mesh.cli._console import err_console
from mesh.errors import ConfigError, InputError, MeshError

__all__ = ["app", "build", "main"]

#: Subcommand groups: name -> (module in mesh.cli whose ``app`` they are, add_typer options).
_GROUPS: dict[str, tuple[str, dict[str, Any]]] = {
    "dev": ("dev", {}),
    "config": ("config", {}),
    "registry": ("registry", {}),
    "schema": ("schema", {}),
    "dlq": ("dlq", {}),
    "replay": ("replay", {"help": "Re-consume history into stdout, a topic or an agent."}),
}
#: Commands: name -> (module in mesh.cli, function).
_COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run"),
    "publish": ("publish", "publish"),
    "tail": ("tail", "tail"),
    "trace": ("trace", "trace_"),
    "demo": ("demo", "demo"),
    "console": ("console", "console"),
    "init": ("init", "init"),
    "topics": ("topics", "topics"),
    "groups": ("groups", "groups"),
}


def build(only: str | None = None) -> typer.Typer:
    """The ``mesh`` command with every command, or with *only* the one named."""
    root = typer.Typer(
        name="mesh",
        help="A Kafka-native event mesh for AI agents.",
        epilog="Exit codes, the same for every command: 0 done; 1 failed (unreachable, "
        "refused, incompatible, nothing found); 2 usage or configuration error, nothing "
        "done; 130 interrupted.",
        no_args_is_help=True,
        # Help paragraphs are reflowed to the terminal (rich mode keeps the source's breaks).
        rich_markup_mode="markdown",
        pretty_exceptions_enable=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    for name, (module, options) in _GROUPS.items():
        if only in (None, name):
            root.add_typer(_load(module, "app"), name=name, **options)
    for name, (module, function) in _COMMANDS.items():
        if only in (None, name):
            root.command(name)(_load(module, function))
    root.callback()(_root)
    return root


def _load(module: str, attribute: str) -> Any:
    return getattr(importlib.import_module(f"mesh.cli.{module}"), attribute)


def __getattr__(name: str) -> typer.Typer:
    if name == "app":  # every command, built on first use
        return _every_command()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _every_command() -> typer.Typer:
    return build()


def _version(shown: bool) -> None:
    if shown:
        print(f"mesh {__version__}")
        raise typer.Exit()


def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """A Kafka-native event mesh for AI agents."""


def main() -> None:
    """Entry point: a reported error is a line on stderr (one per problem), never a traceback.

    Exit code 2 when the input or the configuration was wrong (nothing was done), 1 for
    other errors, 130 when interrupted. A Kafka client's error that mesh did not turn
    into its own is reported as librdkafka worded it; one refusing to start is a
    configuration error.
    """
    named = sys.argv[1] if len(sys.argv) > 1 else None
    try:
        # Only the named command's module (help, --version or a typo: all of them).
        build(named if named in _GROUPS or named in _COMMANDS else None)()
    except KeyboardInterrupt:
        sys.exit(130)
    except MeshError as exc:
        _fail(str(exc) or type(exc).__name__, 2 if isinstance(exc, InputError | ConfigError) else 1)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if not isinstance(error, KafkaError):
            _fail(f"Kafka: {exc}", 1)
        if error.code() == KafkaError._INVALID_ARG:  # a client refused its configuration
            _fail(f"the [kafka] settings: {error.str()}", 2)
        _fail(f"Kafka: {error.str()}", 1)


def _fail(message: str, code: int) -> NoReturn:
    for line in message.splitlines():
        err_console.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True)
    sys.exit(code)
