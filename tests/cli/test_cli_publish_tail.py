"""`mesh publish` and `mesh tail` as a user runs them: subprocesses on the session's stack."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from mesh.kafka.topics import existing_topics
from mesh.testing import unique_name
from tests.support import header, read_topic


@pytest.fixture
def cli(
    tmp_path: Path, mesh_bootstrap_servers: str, mesh_registry_url: str
) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``mesh ARGS`` in *tmp_path* (no mesh.toml) against the session's stack."""
    env = {
        **os.environ,
        "MESH_BOOTSTRAP_SERVERS": mesh_bootstrap_servers,
        "MESH_REGISTRY_URL": mesh_registry_url,
    }

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mesh", *args],
            cwd=tmp_path,
            env=env,
            check=False,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )

    run.env = env  # type: ignore[attr-defined]
    return run


@pytest.fixture
def events_module(tmp_path: Path) -> str:
    """A module ``cli_events`` in the working directory: an event type on a fresh topic, an app."""
    topic = unique_name("cli-orders")
    (tmp_path / "cli_events.py").write_text(
        textwrap.dedent(
            f"""
            from datetime import datetime
            from uuid import UUID
            from mesh import Event, Mesh

            class OrderPlaced(Event, name="acme.shop.OrderPlaced", topic="{topic}", key="order_id"):
                order_id: str
                quantity: int
                placed_at: datetime
                ref: UUID

            app = Mesh("shop")

            @app.agent("billing", consumes=OrderPlaced)
            def billing(event: OrderPlaced) -> None: ...
            """
        )
    )
    return topic


def _order(order_id: str = "o-1", quantity: int = 3) -> str:
    return json.dumps(
        {
            "order_id": order_id,
            "quantity": quantity,
            "placed_at": "2026-11-26T10:00:00.123Z",
            "ref": "6f1c3f0e-4a7b-4a39-9a52-6d6573680001",
        }
    )


def _error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_publish_then_tail_from_beginning(cli, events_module: str, mesh_bootstrap_servers: str):
    first = cli(
        "publish", "cli_events:OrderPlaced", "--data", _order("o-1"),
        "--header", "source=test", "--correlation-id", "req-42", "--json",
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    published = json.loads(first.stdout)
    assert published["topic"] == events_module
    assert published["key"] == "o-1"
    assert published["correlation_id"] == "req-42"
    second = cli(
        "publish", "OrderPlaced", "--app", "cli_events:app", "--data", "-", "--key", "custom",
        input=_order("o-2", 5),
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert f"to {events_module} partition" in second.stdout

    tail = cli(
        "tail", events_module, "--from-beginning", "--json", "--limit", "2", "--timeout", "20"
    )
    assert tail.returncode == 0, tail.stderr
    records = sorted(
        (json.loads(line) for line in tail.stdout.splitlines()),
        key=lambda r: r["value"]["order_id"],
    )
    assert [r["key"] for r in records] == ["o-1", "custom"]
    one, two = records
    assert one["value"] == {
        "order_id": "o-1",
        "quantity": 3,
        "placed_at": "2026-11-26T10:00:00.123000+00:00",
        "ref": "6f1c3f0e-4a7b-4a39-9a52-6d6573680001",
    }
    assert one["offset"] == published["offset"]
    assert one["partition"] == published["partition"]
    assert isinstance(one["timestamp"], int)
    assert one["headers"]["mesh.event-id"] == published["event_id"]
    assert one["headers"]["mesh.event-type"] == "acme.shop.OrderPlaced"
    assert one["headers"]["mesh.correlation-id"] == "req-42"
    assert one["headers"]["mesh.produced-by"] == "mesh-cli"
    assert one["headers"]["source"] == "test"
    assert two["value"]["quantity"] == 5
    assert two["headers"]["mesh.produced-by"] == "shop"
    # What tail printed is what is on the topic, byte for byte.
    raw = read_topic(mesh_bootstrap_servers, events_module, 2, partitions=3)
    assert {header(m, "mesh.event-id") for m in raw} == {
        r["headers"]["mesh.event-id"] for r in records
    }


def test_tail_from_end_shows_only_new_records(cli, mesh_topic, mesh_bootstrap_servers: str):
    topic = mesh_topic(partitions=2)
    producer = Producer({"bootstrap.servers": mesh_bootstrap_servers, "linger.ms": 50})
    for i in range(100):  # one batch per partition: Tansu's ListOffsets says ~1, not ~50
        producer.produce(topic, f"old-{i}".encode(), key=str(i).encode())
    assert producer.flush(10) == 0

    tail = subprocess.Popen(
        [sys.executable, "-m", "mesh", "tail", topic, "--json", "--limit", "4", "--timeout", "30"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None
        ready = tail.stderr.readline()
        assert ready.startswith(f"tailing {topic} partitions 0, 1 from the end"), ready
        for i in range(4):
            producer.produce(topic, f"new-{i}".encode(), key=str(i).encode())
        assert producer.flush(10) == 0
        out, err = tail.communicate(timeout=60)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    values = sorted(base64.b64decode(r["value_base64"]).decode() for r in records)
    assert values == ["new-0", "new-1", "new-2", "new-3"]


def test_tail_shows_a_non_avro_record_with_value_error(cli, mesh_topic, mesh_bootstrap_servers):
    topic = mesh_topic()
    producer = Producer({"bootstrap.servers": mesh_bootstrap_servers})
    producer.produce(topic, b"\xffnot avro", key=b"\xfe\x00", headers=[("h", b"\xff")])
    producer.produce(topic, None, key=b"gone")  # a tombstone: no value, no error
    assert producer.flush(10) == 0

    tail = cli("tail", topic, "--from-beginning", "--json", "--limit", "2", "--timeout", "20")
    assert tail.returncode == 0, tail.stderr
    bad, tombstone = (json.loads(line) for line in tail.stdout.splitlines())
    assert "not the Confluent wire format" in bad["value_error"]
    assert base64.b64decode(bad["value_base64"]) == b"\xffnot avro"
    assert bad["value"] is None
    assert bad["key"] == base64.b64encode(b"\xfe\x00").decode()
    assert bad["headers"] == {"h": base64.b64encode(b"\xff").decode()}
    assert tombstone == {**tombstone, "key": "gone", "value": None}
    assert "value_error" not in tombstone

    human = cli("tail", topic, "--from-beginning", "--limit", "1", "--timeout", "20")
    assert human.returncode == 0, human.stderr
    assert "value_error:" in human.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cli_events:OrderPlaced", "--data", "{not json"], "event data is not valid JSON"),
        (["cli_events:OrderPlaced", "--data", "[1]"], "event data must be a JSON object"),
        (["cli_events:Missing", "--data", "{}"], "unknown event type 'cli_events:Missing'"),
        (["NoSuchEvent", "--app", "cli_events:app", "--data", "{}"], "has no event type"),
        (["OrderPlaced", "--data", "{}"], "give it as module:ClassName"),
        (["cli_events:OrderPlaced", "--data", _order(), "--header", "x"], "key=value"),
        (["cli_events:OrderPlaced", "--data", _order(), "--header", "mesh.event-id=1"], "set by"),
    ],
)
def test_publish_refuses_bad_input(cli, events_module, mesh_admin: AdminClient, args, message):
    result = cli("publish", *args)
    assert result.returncode == 2, result.stderr
    [line] = _error_lines(result)
    assert line.startswith("error: "), line
    assert message in line, line
    assert events_module not in existing_topics(mesh_admin)  # nothing sent, nothing created


def test_publish_reports_each_invalid_field(cli, events_module, mesh_admin: AdminClient):
    data = json.dumps({"order_id": "o", "quantity": "many", "ref": "x", "extra": 1})
    result = cli("publish", "cli_events:OrderPlaced", "--data", data)
    assert result.returncode == 2
    lines = _error_lines(result)
    assert [line.split(":")[1] for line in lines] == [
        " OrderPlaced.quantity",
        " OrderPlaced.placed_at",
        " OrderPlaced.ref",
        " OrderPlaced.extra",
    ]
    assert all(line.startswith("error: ") for line in lines)
    assert lines[1] == "error: OrderPlaced.placed_at: Field required"
    assert events_module not in existing_topics(mesh_admin)


def test_tail_of_unknown_topic_is_refused_and_not_created(cli, mesh_admin: AdminClient):
    topic = unique_name("no-such-topic")
    result = cli("tail", topic, "--timeout", "1")
    assert result.returncode == 2
    assert _error_lines(result) == [f"error: topic '{topic}' does not exist"]
    assert topic not in existing_topics(mesh_admin)


def test_tail_stops_on_ctrl_c_with_exit_code_130_and_no_traceback(cli, mesh_topic):
    topic = mesh_topic()
    tail = subprocess.Popen(
        [sys.executable, "-m", "mesh", "tail", topic],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert tail.stderr is not None
        assert tail.stderr.readline().startswith(f"tailing {topic}")
        tail.send_signal(signal.SIGINT)
        _, err = tail.communicate(timeout=20)
    finally:
        tail.kill()
    assert tail.returncode == 130, err
    assert "Traceback" not in err
