"""``mesh schema register/check/list/show/diff`` against the live registry of the session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from mesh.schema.check import Levels, Naming, check_against_registry, read_schema_dir
from mesh.schema.compatibility import CompatibilityLevel
from mesh.schema.subjects import register_schemas
from mesh.serde import SubjectStrategy

ID = {"name": "id", "type": "string"}


def avsc(name: str, *fields: dict[str, Any], namespace: str = "acme") -> str:
    return json.dumps(
        {"type": "record", "name": name, "namespace": namespace, "fields": [ID, *fields]}, indent=2
    )


def declare_app(cwd: Path, tag: str) -> None:
    """A project whose app (``app =`` in mesh.toml) consumes acme.Order{tag} on orders.{tag}."""
    (cwd / "shop.py").write_text(
        textwrap.dedent(
            f"""
            from mesh import Event, Mesh

            class Order(Event, topic="orders.{tag}", name="acme.Order{tag}"):
                id: str

            app = Mesh("shop")

            @app.agent("packer", consumes=Order)
            async def packer(event: Order) -> None:
                pass
            """
        )
    )
    (cwd / "mesh.toml").write_text('app = "shop:app"\n')


def mesh(registry_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESH_REGISTRY_URL": registry_url}
    return subprocess.run(
        [sys.executable, "-m", "mesh", "schema", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_register_is_idempotent_and_follows_references(
    mesh_registry_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    declare_app(tmp_path, tag)
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    money = {"type": "record", "name": f"Money{tag}", "namespace": "acme", "fields": [ID]}
    (schemas / "money.avsc").write_text(json.dumps(money))
    (schemas / "order.avsc").write_text(
        avsc(f"Order{tag}", {"name": "price", "type": f"Money{tag}"})
    )

    client = SchemaRegistryClient({"url": mesh_registry_url})
    for dry_run in (("--dry-run",), ()):  # without --execute, a dry run too
        dry = mesh(mesh_registry_url, tmp_path, "register", *dry_run)
        assert dry.returncode == 0, dry.stderr
        assert "would register 2 of 2 schema(s) (dry run: add --execute" in dry.stdout
        assert not {f"orders.{tag}-value", f"acme.Money{tag}"} & set(client.get_subjects())

    first = mesh(mesh_registry_url, tmp_path, "register", "--execute")
    assert first.returncode == 0, first.stderr
    assert "registered 2 of 2" in first.stdout
    order = client.get_latest_version(f"orders.{tag}-value")  # the event type's topic
    (reference,) = order.schema.references
    assert (reference.name, reference.subject, reference.version) == (
        f"acme.Money{tag}",
        f"acme.Money{tag}",  # a shared record, no event type: its full name
        1,
    )

    again = mesh(mesh_registry_url, tmp_path, "register", "--execute")
    assert "registered 0 of 2" in again.stdout  # idempotent
    assert client.get_versions(f"orders.{tag}-value") == [1]

    listed = mesh(mesh_registry_url, tmp_path, "list")
    assert f"orders.{tag}-value" in listed.stdout
    shown = mesh(mesh_registry_url, tmp_path, "show", f"orders.{tag}-value", "--version", "1")
    assert f"references acme.Money{tag}: acme.Money{tag} v1" in shown.stdout
    assert json.loads(shown.stdout.split("\n", 2)[2])["name"] == f"Order{tag}"


def test_register_then_check_a_change_then_diff(mesh_registry_url: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    declare_app(tmp_path, tag)
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    path = schemas / "order.avsc"
    subject = f"orders.{tag}-value"
    path.write_text(avsc(f"Order{tag}"))
    assert mesh(mesh_registry_url, tmp_path, "register", "--execute").returncode == 0

    path.write_text(avsc(f"Order{tag}", {"name": "qty", "type": "int"}))  # no default
    broken = mesh(
        mesh_registry_url, tmp_path, "check", "--against-registry", mesh_registry_url, "--json"
    )
    assert broken.returncode == 1, broken.stderr
    (result,) = json.loads(broken.stdout)["results"]
    assert (result["subject"], result["status"], result["compared_with"]) == (
        subject,
        "incompatible",
        [1],
    )
    assert result["problems"][0]["kinds"] == ["READER_FIELD_MISSING_DEFAULT_VALUE"]

    path.write_text(avsc(f"Order{tag}", {"name": "qty", "type": "int", "default": 1}))
    ok = mesh(mesh_registry_url, tmp_path, "check", "--against-registry", mesh_registry_url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert mesh(mesh_registry_url, tmp_path, "register", "--execute").returncode == 0

    diff = mesh(mesh_registry_url, tmp_path, "diff", subject)
    assert diff.returncode == 0, diff.stderr
    assert f"{subject}: version 1 -> version 2" in diff.stdout
    assert "field 'qty': in version 2, not in version 1" in diff.stdout

    missing = mesh(mesh_registry_url, tmp_path, "show", f"nothing-{tag}")
    assert missing.returncode == 2


def test_transitive_levels_use_every_live_version_and_skip_soft_deleted(
    mesh_registry_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    name = f"Order{tag}"
    subject = f"orders.{tag}-value"
    naming = Naming(SubjectStrategy.TOPIC_NAME, {f"acme.{name}": f"orders.{tag}"})
    client = SchemaRegistryClient({"url": mesh_registry_url})
    client.set_compatibility(subject, "NONE")
    v1 = avsc(name, {"name": "b", "type": "int", "default": 0})
    v2 = avsc(name)
    v3 = avsc(name, {"name": "b", "type": "string", "default": "x"})  # b was an int in v1
    for text in (v1, v2):
        client.register_schema(subject, Schema(text, "AVRO"))
    schemas = tmp_path / "schemas"
    schemas.mkdir()
    (schemas / "order.avsc").write_text(v3)
    current = read_schema_dir(schemas)

    def check(level: str) -> Any:
        (result,) = check_against_registry(
            schemas, client, naming=naming, levels=Levels(), level=CompatibilityLevel(level)
        ).results
        return result

    assert check("FULL").status == "compatible"  # v2 only
    transitive = check("FULL_TRANSITIVE")
    assert (transitive.status, transitive.compared_with) == ("incompatible", (1, 2))
    assert {p.version for p in transitive.problems} == {1}

    client.delete_version(subject, 1)  # soft delete: no longer a live version
    after = check("FULL_TRANSITIVE")
    assert (after.status, after.compared_with) == ("compatible", (2,))

    levels = Levels(subjects={subject: CompatibilityLevel.FULL_TRANSITIVE})
    (registered,) = register_schemas(client, current, naming=naming, levels=levels)
    assert (registered.state, registered.version) == ("registered", 3)
    assert client.get_compatibility(subject) == "FULL_TRANSITIVE"  # declared level applied


def test_a_breaking_change_is_caught_on_the_subject_the_runtime_registered(
    mesh_registry_url: str, tmp_path: Path
) -> None:
    """The issue's case: TicketOpened on tickets.opened; priority int -> string plus a new
    field without a default. Subjects guessed from the record name said "new", exit 0."""
    tag = uuid.uuid4().hex[:8]
    model = """
        from mesh import Event, Mesh

        class TicketOpened(Event, topic="tickets-{tag}.opened", name="acme{tag}.TicketOpened"):
            ticket_id: str
            priority: {fields}

        app = Mesh("helpdesk")

        @app.agent("classifier", consumes=TicketOpened)
        async def classifier(event: TicketOpened) -> None:
            pass
        """
    (tmp_path / "tickets.py").write_text(textwrap.dedent(model.format(tag=tag, fields="int")))
    (tmp_path / "mesh.toml").write_text('app = "tickets:app"\n')
    assert mesh(mesh_registry_url, tmp_path, "gen").returncode == 0
    runtime = subprocess.run(  # the runtime registers the schema, as at an agent's start
        [sys.executable, "-c", "import tickets; from mesh.serde import Serde; "
         "Serde.from_settings(tickets.app.settings).register("
         "tickets.TicketOpened, tickets.TicketOpened.topic())"],
        cwd=tmp_path, env={**os.environ, "MESH_REGISTRY_URL": mesh_registry_url},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert runtime.returncode == 0, runtime.stderr
    subject = f"tickets-{tag}.opened-value"
    client = SchemaRegistryClient({"url": mesh_registry_url})
    assert client.get_versions(subject) == [1]

    breaking = textwrap.dedent(model.format(tag=tag, fields="str\n            team: str"))
    (tmp_path / "tickets.py").write_text(breaking)
    assert mesh(mesh_registry_url, tmp_path, "gen").returncode == 0
    check = mesh(mesh_registry_url, tmp_path, "check", "--against-registry", mesh_registry_url)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "INCOMPATIBLE" in check.stdout
    assert subject in check.stdout

    dry = mesh(mesh_registry_url, tmp_path, "register")
    assert dry.returncode == 0, dry.stderr
    assert "would register 1 of 1" in dry.stdout
    assert client.get_versions(subject) == [1]  # nothing written without --execute
