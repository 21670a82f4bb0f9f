"""The ``mesh`` command: one thin module per command group (parse, call the library, print)."""

from __future__ import annotations

import sys
from typing import Annotated, NoReturn

import typer
from confluent_kafka import KafkaError, KafkaException
from rich.markup import escape

from mesh import __version__
from mesh.cli import config, demo, dev, dlq, groups, publish, registry, replay, run, schema, tail
from mesh.cli import console as console_cli
from mesh.cli import init as init_cli
from mesh.cli import topics as topics_cli
from mesh.cli import trace as trace_cli
from mesh.cli._console import err_console
from mesh.errors import ConfigError, InputError, MeshError

__all__ = ["app", "main"]

app = typer.Typer(
    name="mesh",
    help="A Kafka-native event mesh for AI agents.",
    epilog="Exit codes, the same for every command: 0 done; 1 failed (unreachable, refused, "
    "incompatible, nothing found); 2 usage or configuration error, nothing done; "
    "130 interrupted.",
    no_args_is_help=True,
    # Help paragraphs are reflowed to the terminal (rich mode keeps the source's breaks).
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(dev.app, name="dev")
app.add_typer(config.app, name="config")
app.add_typer(registry.app, name="registry")
app.add_typer(schema.app, name="schema")
app.add_typer(dlq.app, name="dlq")
app.add_typer(
    replay.app, name="replay", help="Re-consume history into stdout, a topic or an agent."
)
app.command("run")(run.run)
app.command("publish")(publish.publish)
app.command("tail")(tail.tail)
app.command("trace")(trace_cli.trace_)
app.command("demo")(demo.demo)
app.command("console")(console_cli.console)
app.command("init")(init_cli.init)
app.command("topics")(topics_cli.topics)
app.command("groups")(groups.groups)


def _version(shown: bool) -> None:
    if shown:
        print(f"mesh {__version__}")
        raise typer.Exit()


@app.callback()
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
    try:
        app()
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
