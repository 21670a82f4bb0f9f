"""Readers end on topics written with transactions, whose last offset is a commit marker."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

from confluent_kafka import Producer
from typer.testing import CliRunner

import mesh.cli
from mesh import Settings
from mesh.kafka.reader import Tail
from mesh.ops.replay import PartitionRange, ReplayPlan, replay
from mesh.ops.sinks import LineSink
from mesh.serde import Serde
from mesh.testing import unique_name

RECORDS = 5


def _transactional_topic(settings: Settings, mesh_topic: Callable[..., str]) -> str:
    """RECORDS records in one committed transaction: the high watermark is RECORDS + 1."""
    topic = mesh_topic(partitions=1)
    producer = Producer(
        {"bootstrap.servers": settings.bootstrap_servers, "transactional.id": unique_name("tx")}
    )
    producer.init_transactions(10)
    producer.begin_transaction()
    for n in range(RECORDS):
        producer.produce(topic, f"v{n}".encode(), b"k")
    producer.commit_transaction(10)
    return topic


def test_replay_of_a_transactional_topic_ends_at_the_commit_marker(
    mesh_settings: Settings, mesh_topic: Callable[..., str]
) -> None:
    topic = _transactional_topic(mesh_settings, mesh_topic)
    env = {
        "MESH_BOOTSTRAP_SERVERS": mesh_settings.bootstrap_servers,
        "MESH_REGISTRY_URL": mesh_settings.registry_url,
    }
    args = ["replay", topic, "--format", "raw", "--idle-timeout", "60s", "--json"]
    result = CliRunner().invoke(mesh.cli.app, args, env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["offset"] for record in records] == list(range(RECORDS))
    summary = json.loads(result.stderr.splitlines()[-1])  # records went to stdout
    assert summary["plan"]["partitions"][0]["end"] == RECORDS + 1
    assert summary["incomplete"] is False


def test_a_tail_to_the_end_of_a_transactional_topic_ends(
    mesh_settings: Settings, mesh_topic: Callable[..., str]
) -> None:
    """What `mesh dlq list` and `show` read with: every record, then the end."""
    topic = _transactional_topic(mesh_settings, mesh_topic)
    with Tail(mesh_settings, topic, from_beginning=True, to_end=True) as reader:
        assert reader.ends == {0: RECORDS + 1}
        offsets = [msg.offset() for msg in reader.messages(idle_timeout_s=60)]
        assert not reader.idled
    assert offsets == list(range(RECORDS))


def test_a_replay_stops_idle_short_of_an_end_that_never_comes(
    mesh_settings: Settings, mesh_topic: Callable[..., str]
) -> None:
    topic = _transactional_topic(mesh_settings, mesh_topic)
    plan = ReplayPlan(topic, (PartitionRange(0, 0, RECORDS + 10),))
    sink = LineSink(io.StringIO(), fmt="raw", serde=Serde.from_settings(mesh_settings))
    summary = replay(mesh_settings, plan, sink, idle_timeout_s=1.0)
    assert summary.read == RECORDS
    assert summary.incomplete
    assert "no record for 1s before the end" in summary.problems[0]
