"""The ``_schemas`` topic: its replication, and the topics the registry refuses to serve."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from mesh.dev.stack import LOCALHOST, ManagedProcess, free_port
from mesh.testing import unique_name
from tests.support import read_topic

StartRegistry = Callable[[str], ManagedProcess]


def serve(bootstrap_servers: str, topic: str) -> subprocess.CompletedProcess[str]:
    """``mesh registry serve`` on *topic*, expected to refuse it and exit."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mesh",
            "registry",
            "serve",
            "--bootstrap-servers",
            bootstrap_servers,
            "--host",
            LOCALHOST,
            "--port",
            str(free_port()),
            "--topic",
            topic,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_topic_is_created_with_the_replication_factor_asked_for(
    start_registry_on: StartRegistry, mesh_admin: AdminClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESH_REGISTRY_REPLICATION_FACTOR", "3")
    topic = unique_name("_schemas")
    start_registry_on(topic)
    [partition] = mesh_admin.list_topics(timeout=10).topics[topic].partitions.values()
    assert len(partition.replicas) == 3


def test_a_topic_that_deletes_old_records_is_refused(
    mesh_bootstrap_servers: str, mesh_topic: Callable[..., str]
) -> None:
    topic = mesh_topic(config={"cleanup.policy": "delete"})
    refused = serve(mesh_bootstrap_servers, topic)
    assert refused.returncode == 1
    [line] = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert f"topic {topic} has cleanup.policy=delete" in line
    assert "needs cleanup.policy=compact" in line


def test_a_topic_written_by_confluent_schema_registry_is_refused_and_left_untouched(
    mesh_bootstrap_servers: str, mesh_topic: Callable[..., str]
) -> None:
    topic = mesh_topic(config={"cleanup.policy": "compact"})
    # what Confluent Schema Registry writes: a NOOP at start-up, then a schema; no headers
    written = [
        (b'{"keytype":"NOOP","magic":0}', None),
        (
            b'{"keytype":"SCHEMA","subject":"orders-value","version":1,"magic":1}',
            json.dumps(
                {
                    "subject": "orders-value",
                    "version": 1,
                    "id": 1,
                    "schema": '"string"',
                    "deleted": False,
                }
            ).encode(),
        ),
    ]
    producer = Producer({"bootstrap.servers": mesh_bootstrap_servers})
    for key, value in written:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0

    refused = serve(mesh_bootstrap_servers, topic)
    assert refused.returncode == 1
    [line] = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert f"topic {topic} holds a record that no mesh registry wrote (offset 0)" in line
    assert "Confluent" in line
    with pytest.raises(AssertionError, match="2 records of 3"):  # it wrote nothing
        read_topic(mesh_bootstrap_servers, topic, 3, timeout_s=3)
