"""pytest plugin: real Kafka and a real schema registry for tests (loaded automatically).

Where the broker comes from, in order:

1. ``MESH_BOOTSTRAP_SERVERS`` is set: that cluster is used as it is;
2. ``MESH_TEST_BROKER=docker``: Apache Kafka in a container (the official image, KRaft,
   ``MESH_TEST_KAFKA_IMAGE`` to pick another), through testcontainers;
3. otherwise the embedded Tansu broker, started for the session on a free port.

The registry is ``MESH_REGISTRY_URL`` when set, otherwise a ``mesh registry serve``
process on the session's broker. Topic names are unique per test, so tests never
share state even on a shared cluster.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from mesh.config import Settings
from mesh.dev.stack import free_port, start_broker, start_registry
from mesh.kafka.topics import TopicSpec, ensure_topics

__all__ = ["FAST_GROUP_CONFIG", "unique_name"]

#: Consumer settings that make group rebalances take seconds instead of ~25 s on Tansu,
#: whose JoinGroup waits about half the session timeout. Tests only; production keeps
#: Kafka's defaults.
FAST_GROUP_CONFIG: dict[str, int] = {
    "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 500,
}


def unique_name(prefix: str = "t") -> str:
    """A topic or group name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def mesh_bootstrap_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Kafka-compatible broker for the whole session."""
    configured = os.environ.get("MESH_BOOTSTRAP_SERVERS")
    if configured:
        yield configured
        return
    if os.environ.get("MESH_TEST_BROKER") == "docker":
        yield from _apache_kafka(os.environ.get("MESH_TEST_KAFKA_IMAGE", "apache/kafka:3.9.1"))
        return
    log_dir: Path = tmp_path_factory.mktemp("broker")
    broker = start_broker(port=free_port(), log_dir=log_dir)
    try:
        yield broker.url
    finally:
        broker.stop()


def _apache_kafka(image: str) -> Iterator[str]:
    """One Apache Kafka broker in KRaft mode (the official image), through testcontainers.

    The broker advertises the host port it is published on, so it is bound to a free
    port chosen here rather than a random one Docker would pick after the start.
    """
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.waiting_utils import wait_for_logs

    port = free_port()
    kafka = (
        DockerContainer(image)
        .with_bind_ports(9092, port)
        .with_envs(
            KAFKA_NODE_ID="1",
            KAFKA_PROCESS_ROLES="broker,controller",
            KAFKA_LISTENERS="PLAINTEXT://:9092,CONTROLLER://:9093",
            KAFKA_ADVERTISED_LISTENERS=f"PLAINTEXT://127.0.0.1:{port}",
            KAFKA_CONTROLLER_LISTENER_NAMES="CONTROLLER",
            KAFKA_LISTENER_SECURITY_PROTOCOL_MAP="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            KAFKA_CONTROLLER_QUORUM_VOTERS="1@localhost:9093",
            KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR="1",
            KAFKA_TRANSACTION_STATE_LOG_MIN_ISR="1",
            KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS="0",
            KAFKA_AUTO_CREATE_TOPICS_ENABLE="false",
        )
    )
    with kafka:
        wait_for_logs(kafka, "Kafka Server started", timeout=120)
        yield f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def mesh_registry_url(
    mesh_bootstrap_servers: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """URL of a Confluent-compatible schema registry for the whole session."""
    configured = os.environ.get("MESH_REGISTRY_URL")
    if configured:
        yield configured
        return
    registry = start_registry(
        bootstrap_servers=mesh_bootstrap_servers,
        port=free_port(),
        log_dir=tmp_path_factory.mktemp("registry"),
    )
    try:
        yield registry.url
    finally:
        registry.stop()


@pytest.fixture(scope="session")
def mesh_admin(mesh_bootstrap_servers: str) -> AdminClient:
    """An admin client on the session's broker."""
    return AdminClient({"bootstrap.servers": mesh_bootstrap_servers})


@pytest.fixture
def mesh_settings(mesh_bootstrap_servers: str, mesh_registry_url: str) -> Settings:
    """Settings pointing at the session's broker and registry, ignoring any mesh.toml."""
    return Settings(bootstrap_servers=mesh_bootstrap_servers, registry_url=mesh_registry_url)


@pytest.fixture
def mesh_topic(mesh_admin: AdminClient, request: pytest.FixtureRequest) -> Callable[..., str]:
    """Factory: ``mesh_topic(partitions=1, config=None) -> name`` creates a fresh topic."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[:40].strip("-")

    def create(partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = unique_name(stem)
        ensure_topics(mesh_admin, [TopicSpec(name, partitions, config=config or {})])
        return name

    return create
