"""`mesh topics` and `mesh groups` on the session's broker: sizes and lag as a user reads them."""

from __future__ import annotations

import json
from collections.abc import Callable

from confluent_kafka import Consumer, Producer, TopicPartition
from typer.testing import CliRunner, Result

import mesh.cli
from mesh import Settings
from mesh.testing import FAST_GROUP_CONFIG, unique_name


def _mesh(settings: Settings, *args: str) -> Result:
    env = {"MESH_BOOTSTRAP_SERVERS": settings.bootstrap_servers, "COLUMNS": "80"}
    result = CliRunner().invoke(mesh.cli.app, list(args), env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def _produce(settings: Settings, topic: str, per_partition: list[int]) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for partition, count in enumerate(per_partition):
        for i in range(count):
            producer.produce(topic, f"v{i}".encode(), partition=partition)
    assert producer.flush(10) == 0


def test_topics_lists_partitions_and_records_held(
    mesh_settings: Settings, mesh_topic: Callable[..., str]
) -> None:
    topic = mesh_topic(partitions=3)
    _produce(mesh_settings, topic, [2, 0, 5])
    listed = _mesh(mesh_settings, "topics", "--json").stdout
    rows = [json.loads(line) for line in listed.splitlines()]
    assert {"topic": topic, "partitions": 3, "records": 7} in rows
    assert not [r for r in rows if r["topic"].startswith("_")]  # internal ones on request
    table = _mesh(mesh_settings, "topics").stdout
    cells = [[w for w in line.split() if w != "│"] for line in table.splitlines()]
    assert [topic, "3", "7"] in cells, table


def test_groups_shows_committed_offset_end_and_lag_per_partition(
    mesh_settings: Settings, mesh_topic: Callable[..., str]
) -> None:
    topic = mesh_topic(partitions=2)
    _produce(mesh_settings, topic, [4, 3])
    group = unique_name("grp")
    consumer = Consumer(
        {
            "bootstrap.servers": mesh_settings.bootstrap_servers,
            "group.id": group,
            "enable.auto.commit": False,
            **FAST_GROUP_CONFIG,
        }
    )
    consumer.commit(
        offsets=[TopicPartition(topic, 0, 1), TopicPartition(topic, 1, 3)], asynchronous=False
    )
    consumer.close()

    shown = _mesh(mesh_settings, "groups", group, "--json").stdout
    rows = [json.loads(line) for line in shown.splitlines()]
    assert [(r["topic"], r["partition"], r["committed"], r["end"], r["lag"]) for r in rows] == [
        (topic, 0, 1, 4, 3),
        (topic, 1, 3, 3, 0),
    ]
    assert {r["group"] for r in rows} == {group}
    everyone = _mesh(mesh_settings, "groups", "--json").stdout
    assert group in everyone
    table = _mesh(mesh_settings, "groups", group).stdout
    lines = table.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert lines[0] == f"{group} empty, 0 member(s)"
    assert "…" not in table  # a long topic name is folded, never cut
