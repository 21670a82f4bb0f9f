"""What holds for every `mesh` command: the shared options, --json, exit codes, help at 80
columns, and a connection error that names the address and what to do."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

import mesh
import mesh.cli
from mesh.dev.stack import free_port
from tests.support import mesh_cli, mesh_env

ROOT = typer.main.get_command(mesh.cli.app)

#: Commands that talk to Kafka: each takes -b/--bootstrap-servers.
CLIENT_COMMANDS = [
    "run",
    "publish",
    "tail",
    "trace",
    "topics",
    "groups",
    "config show",
    "dev smoke",
    "dlq list",
    "dlq show",
    "dlq redrive",
    "replay",
    "replay reset-group",
    "console",
    "demo",
]
#: Those that also read or write schemas: each takes --registry-url. The schema commands
#: that talk to a registry talk to nothing else, so they take no -b.
REGISTRY_COMMANDS = [
    *(c for c in CLIENT_COMMANDS if c not in ("topics", "groups", "replay reset-group")),
    "schema register",
    "schema list",
    "schema show",
    "schema diff",
]
#: Commands that only read: each can print JSON.
READ_COMMANDS = [
    "publish",
    "tail",
    "trace",
    "topics",
    "groups",
    "dev status",
    "dlq list",
    "dlq show",
    "replay",
]


def _commands(group: Any = ROOT, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command's path, groups included (typer's click is its own: duck-typed)."""
    yield path
    for name, command in getattr(group, "commands", {}).items():
        yield from _commands(command, (*path, name))


def _command(path: str) -> Any:
    command = ROOT
    for name in path.split():
        command = command.commands[name]
    return command


def _options(path: str) -> dict[str, Any]:
    return {opt: p for p in _command(path).params for opt in p.opts}


def test_mesh_version_prints_the_version() -> None:
    result = CliRunner().invoke(mesh.cli.app, ["--version"])
    assert (result.exit_code, result.output) == (0, f"mesh {mesh.__version__}\n")


@pytest.mark.parametrize("path", [" ".join(p) for p in _commands()], ids=lambda p: p or "mesh")
def test_every_help_fits_80_columns_with_paragraphs_reflowed(path: str) -> None:
    result = CliRunner().invoke(mesh.cli.app, [*path.split(), "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    # A source line break kept in the help leaves a line of one or two words.
    prose = [
        line.strip()
        for line in lines
        if line.strip() and not line.strip().startswith(("│", "╭", "╰", "Usage:"))
    ]
    assert all(len(line.split()) > 2 or line.endswith(".") for line in prose), prose


@pytest.mark.parametrize("path", CLIENT_COMMANDS)
def test_every_client_command_takes_bootstrap_servers(path: str) -> None:
    options = _options(path)
    assert options["-b"] is options["--bootstrap-servers"]


@pytest.mark.parametrize("path", REGISTRY_COMMANDS)
def test_every_command_using_the_registry_takes_registry_url(path: str) -> None:
    assert "--registry-url" in _options(path)


@pytest.mark.parametrize("path", READ_COMMANDS)
def test_every_read_command_prints_json(path: str) -> None:
    assert "--json" in _options(path)


@pytest.mark.parametrize("path", [" ".join(p) for p in _commands() if p])
def test_app_is_always_read_from_mesh_app_too(path: str) -> None:
    apps = [p for p in _command(path).params if "--app" in p.opts or p.name == "app_spec"]
    for param in apps:
        assert param.envvar == "MESH_APP", path


def test_limits_and_look_backs_have_one_name_everywhere() -> None:
    for path in ("tail", "dlq list", "dlq redrive", "replay"):
        assert "--limit" in _options(path), path
        assert "--count" not in _options(path), path
    for path in ("trace", "dlq list", "replay"):
        assert "--since" in _options(path), path
        assert "--from-duration" not in _options(path), path


def test_run_without_an_app_is_a_usage_error(tmp_path: Path) -> None:
    result = mesh_cli("run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: name the app: mesh run MODULE:APP (or set MESH_APP)"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "conv_events.py").write_text(
        textwrap.dedent(
            """
            from mesh import Event, Mesh

            class Pinged(Event, topic="conv-pinged"):
                n: int

            app = Mesh("conv")

            @app.agent("echo", consumes=Pinged)
            async def echo(event: Pinged) -> None: ...
            """
        )
    )
    return tmp_path


@pytest.mark.parametrize(
    "args",
    [
        ["publish", "conv_events:Pinged", "-d", '{"n": 1}'],
        ["tail", "conv-pinged"],
        ["trace", "some-correlation-id"],
        ["topics"],
        ["groups"],
        ["dlq", "list", "--topic", "conv-pinged.dlq"],
        ["dlq", "redrive", "conv-pinged.dlq:0:0"],
        ["run", "conv_events:app"],
    ],
    ids=lambda args: " ".join(args[:2]),
)
def test_an_unreachable_broker_is_one_line_naming_the_address_and_what_to_do(
    project: Path, args: list[str]
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    result = mesh_cli(*args, "-b", dead, cwd=project)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: cannot reach the Kafka broker at {dead} (connection refused): start the dev "
        "stack with `mesh dev up`, or name a running broker with -b/--bootstrap-servers (or "
        "MESH_BOOTSTRAP_SERVERS, or bootstrap_servers in mesh.toml)"
    ]


def test_an_unreachable_registry_is_one_line_naming_the_url(
    project: Path, mesh_bootstrap_servers: str
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = mesh_cli(
        "publish", "conv_events:Pinged", "-d", '{"n": 1}',
        "-b", mesh_bootstrap_servers, "--registry-url", dead, cwd=project,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot reach the schema registry at {dead} ("), line
    assert line.endswith(
        "start the dev stack with `mesh dev up`, or name a running registry with "
        "--registry-url (or MESH_REGISTRY_URL, or registry_url in mesh.toml)"
    ), line


@pytest.mark.parametrize(
    "args", [["schema", "list"], ["schema", "show", "x-value"], ["schema", "register"]]
)
def test_a_schema_command_names_the_registry_it_could_not_reach(
    project: Path, args: list[str]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = mesh_cli(*args, "--registry-url", dead, cwd=project, MESH_APP="conv_events:app")
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot reach the schema registry at {dead} ("), line


def test_a_silent_broker_is_given_up_within_5_s_with_a_spinner_on_a_terminal(
    project: Path,
) -> None:
    """A port that accepts and never answers: librdkafka alone would wait its own time-out."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        leader, follower = os.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "mesh", "topics", "-b", address],
            cwd=project,
            env=mesh_env(TERM="xterm", COLUMNS="200"),
            stdin=follower,
            stdout=follower,
            stderr=follower,
        )
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the terminal closed with the process
                break
            if not chunk:
                break
            shown += chunk
        os.close(leader)
        assert proc.wait(60) == 1
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode(errors="replace"))
    assert f"connecting to Kafka at {address}…" in text
    assert f"error: cannot reach the Kafka broker at {address} within 5 s (" in text
