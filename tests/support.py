"""Helpers for tests on a real broker: run an app in a background thread, read a topic back."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupTopicPartitions,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from mesh.testing import FAST_GROUP_CONFIG, unique_name
from mesh.testing import run_app as running

__all__ = ["committed_offsets", "header", "mesh_cli", "mesh_env", "read_topic", "running"]


def read_topic(
    bootstrap: str, topic: str, count: int, *, partitions: int = 1, timeout_s: float = 60
) -> list[Message]:
    """The first *count* records of *topic*, read without a consumer group."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": unique_name("reader"), **FAST_GROUP_CONFIG}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    found: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < count and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=0.2):
                if msg.error() is None:
                    found.append(msg)
    finally:
        consumer.close()
    assert len(found) >= count, f"{topic}: {len(found)} records of {count} after {timeout_s}s"
    return found


def header(msg: Message, name: str) -> str | None:
    values = [v for k, v in msg.headers() or [] if k == name]
    return values[-1].decode() if values else None


def committed_offsets(admin: AdminClient, group: str, topic: str) -> dict[int, int]:
    """The offsets *group* committed on *topic*, by partition (negative: none)."""
    (future,) = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
    return {tp.partition: tp.offset for tp in future.result().topic_partitions if tp.topic == topic}


def mesh_env(**env: str) -> dict[str, str]:
    """This process's environment without its ``MESH_*`` settings, plus *env*: a command
    under test then reads only the configuration the test gives it."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    return {**kept, **env}


def mesh_cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``mesh ARGS`` in a subprocess, in *cwd*, with :func:`mesh_env` (*env* added)."""
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args],
        cwd=cwd,
        env=mesh_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
