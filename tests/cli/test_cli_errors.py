"""`mesh run` with bad Kafka settings: one `error:` line naming the setting, never a traceback."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from mesh.testing import unique_name
from tests.support import mesh_cli


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A working directory with an app module ``relay_app`` and its schemas."""
    (tmp_path / "relay_app.py").write_text(
        textwrap.dedent(
            f"""
            from mesh import Event, Mesh

            class Pinged(Event, topic="{unique_name("pinged")}"):
                n: int

            app = Mesh("{unique_name("errors")}")

            @app.agent("echo", consumes=Pinged)
            async def echo(event: Pinged, ctx) -> None:
                pass
            """
        )
    )
    generated = mesh_cli("schema", "gen", "--module", "relay_app", cwd=tmp_path)
    assert generated.returncode == 0, generated.stderr
    return tmp_path


@pytest.mark.parametrize(
    ("toml", "env", "line"),
    [
        (
            '"linger.ms" = "soon"',
            {},
            'error: mesh.toml: kafka: "linger.ms": Invalid value for configuration property '
            '"queue.buffering.max.ms" (librdkafka\'s name for linger.ms)',
        ),
        (
            '"lingr.ms" = 5',
            {},
            'error: mesh.toml: kafka: "lingr.ms": No such configuration property: "lingr.ms"',
        ),
        (
            "",
            {"MESH_KAFKA": "{bad"},
            "error: environment variable MESH_KAFKA: not valid JSON: Expecting property name "
            "enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        (
            '"compression.type" = "lz4"',
            {"MESH_KAFKA": '{"sasl.mechanism": "PLAIN", "security.protocol": "SASL_SSL"}'},
            "error: the [kafka] settings: Failed to create admin client: sasl.username and "
            "sasl.password must be set",
        ),
    ],
    ids=["invalid-value-under-an-alias", "unknown-property", "invalid-json", "refused-client"],
)
def test_bad_kafka_settings_end_mesh_run_with_one_line_and_exit_code_2(
    project: Path, mesh_bootstrap_servers: str, toml: str, env: dict[str, str], line: str
) -> None:
    (project / "mesh.toml").write_text(f"[kafka]\n{toml}\n")
    result = mesh_cli(
        "run",
        "relay_app:app",
        "--metrics-port",
        "0",
        cwd=project,
        MESH_BOOTSTRAP_SERVERS=mesh_bootstrap_servers,
        **env,
    )
    assert "Traceback" not in result.stderr
    assert (result.returncode, result.stderr.strip()) == (2, line)
