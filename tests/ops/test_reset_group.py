"""`mesh replay reset-group` computes what `kafka-consumer-groups --reset-offsets` would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner, Result

import mesh.cli
from mesh import Settings
from mesh.testing import FAST_GROUP_CONFIG, unique_name
from tests.support import committed_offsets

SIZES = (10, 20, 30)  # records per partition
COMMITTED = (5, 10, 15)


@dataclass(frozen=True)
class Group:
    """COMMITTED offsets on a topic whose record at offset i was created at base + i s."""

    name: str
    topic: str
    base_ms: int


@pytest.fixture
def group(mesh_settings: Settings, mesh_topic: Callable[..., str]) -> Group:
    topic = mesh_topic(partitions=len(SIZES))
    base_ms = (int(time.time()) - 3600) * 1000
    producer = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
    for partition, size in enumerate(SIZES):
        for offset in range(size):
            producer.produce(topic, b"v", partition=partition, timestamp=base_ms + offset * 1000)
    assert producer.flush(10) == 0
    name = unique_name("reset")
    consumer = Consumer({"bootstrap.servers": mesh_settings.bootstrap_servers, "group.id": name})
    consumer.commit(
        offsets=[TopicPartition(topic, p, o) for p, o in enumerate(COMMITTED)], asynchronous=False
    )
    consumer.close()
    return Group(name, topic, base_ms)


@pytest.fixture
def mesh_cli(
    mesh_settings: Settings, tmp_path: Path
) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {
        **os.environ,
        "MESH_BOOTSTRAP_SERVERS": mesh_settings.bootstrap_servers,
        "MESH_REGISTRY_URL": mesh_settings.registry_url,
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mesh", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run


def _committed(admin: AdminClient, group: str, topic: str) -> list[int]:
    found = committed_offsets(admin, group, topic)
    return [found[p] for p in range(len(SIZES))]


@pytest.fixture
def reset(mesh_settings: Settings) -> Callable[..., Result]:
    """``mesh replay reset-group ARGS`` in this process (quicker than a subprocess)."""
    runner = CliRunner()
    env = {
        "MESH_BOOTSTRAP_SERVERS": mesh_settings.bootstrap_servers,
        "MESH_REGISTRY_URL": mesh_settings.registry_url,
    }

    def run(*args: str) -> Result:
        result = runner.invoke(mesh.cli.app, ["replay", "reset-group", *args], env=env)
        assert result.exit_code == 0, (result.output, result.exception)
        return result

    return run


def _plan(reset: Callable[..., Result], *args: str) -> dict:
    return json.loads(reset(*args, "--json").stdout)


def test_targets_match_the_kafka_tool(
    group: Group, reset: Callable[..., Result], mesh_admin: AdminClient, tmp_path: Path
) -> None:
    def new(*args: str) -> list[int]:
        plan = _plan(reset, group.name, "--topic", group.topic, *args)
        assert [c["current"] for c in plan["changes"]] == list(COMMITTED)
        assert plan["active"] is False
        return [c["new"] for c in plan["changes"]]

    assert new("--to-earliest") == [0, 0, 0]
    assert new("--to-latest") == list(SIZES)
    assert new("--to-offset", "12") == [10, 12, 12]  # clamped to partition 0's end
    assert new("--shift-by", "-7") == [0, 3, 8]  # clamped to the start
    assert new("--shift-by", "8") == [10, 18, 23]
    # the first record at or after the time; a time before all: the start; after all: the end
    at = str(group.base_ms + 4500)
    assert new("--to-datetime", at) == [5, 5, 5]
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(group.base_ms / 1000 + 12))
    assert new("--to-datetime", iso) == [10, 12, 12]
    assert new("--by-duration", "2h") == [0, 0, 0]
    assert new("--by-duration", "1s") == list(SIZES)
    # a partition subset: the others are not touched
    plan = _plan(reset, group.name, "--topic", f"{group.topic}:1", "--to-earliest")
    assert [(c["partition"], c["new"]) for c in plan["changes"]] == [(1, 0)]
    # default scope: the topics the group has offsets on
    assert [c["new"] for c in _plan(reset, group.name, "--to-latest")["changes"]] == list(SIZES)

    clamped = reset(group.name, "--to-offset", "25")
    assert f"{group.topic}[0]: offset 25 is past the latest offset; set to 10" in clamped.stderr
    assert _committed(mesh_admin, group.name, group.topic) == list(COMMITTED)  # a dry run

    exported = tmp_path / "offsets.csv"
    plan = _plan(reset, group.name, "--shift-by", "-2", "--export-plan", str(exported))
    assert exported.read_text() == "".join(
        f"{group.topic},{p},{o - 2}\n" for p, o in enumerate(COMMITTED)
    )
    assert plan["executed"] is False

    applied = _plan(reset, group.name, "--from-file", str(exported), "--execute")
    assert applied["executed"] is True
    assert _committed(mesh_admin, group.name, group.topic) == [3, 8, 13]
    _plan(reset, group.name, "--to-latest", "--execute")
    assert _committed(mesh_admin, group.name, group.topic) == list(SIZES)


def test_refuses_to_move_an_active_group(
    group: Group,
    mesh_cli: Callable[..., subprocess.CompletedProcess[str]],
    reset: Callable[..., Result],
    mesh_settings: Settings,
    mesh_admin: AdminClient,
) -> None:
    member = Consumer(
        {
            "bootstrap.servers": mesh_settings.bootstrap_servers,
            "group.id": group.name,
            "enable.auto.commit": False,
            **FAST_GROUP_CONFIG,
        }
    )
    member.subscribe([group.topic])
    try:
        deadline = time.monotonic() + 30
        while not member.assignment() and time.monotonic() < deadline:
            member.poll(0.2)
        assert member.assignment(), "the member never joined"
        result = mesh_cli("replay", "reset-group", group.name, "--to-earliest", "--execute")
        assert result.returncode == 2, result.stderr
        assert "stop its consumers" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert _committed(mesh_admin, group.name, group.topic) == list(COMMITTED)
        dry = _plan(reset, group.name, "--to-earliest")
        assert dry["active"] is True
    finally:
        member.close()


def test_bad_input_exits_2(
    group: Group, mesh_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    bad_file = tmp_path / "bad.csv"
    bad_file.write_text(f"{group.topic},0\n")
    cases = {
        ("--to-earliest", "--to-latest"): "give one target",
        (): "give one target",
        ("--from-file", str(bad_file)): "expected topic,partition,offset",
        ("--topic", f"{group.topic}:7", "--to-earliest"): "not 7",
        ("--to-datetime", "yesterday"): "ISO-8601",
    }
    for args, message in cases.items():
        result = mesh_cli("replay", "reset-group", group.name, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
    fresh = mesh_cli("replay", "reset-group", unique_name("never"), "--shift-by", "1")
    assert fresh.returncode == 2
    assert "no committed offsets" in fresh.stderr


def test_the_documented_undo_recipe_puts_the_offsets_back(
    group: Group, reset: Callable[..., Result], mesh_admin: AdminClient, tmp_path: Path
) -> None:
    """docs/debugging.md: ``--export before.csv`` (a dry run), ``--execute``, then ``--from-file
    before.csv --execute`` undoes it. ``--export`` once wrote the new offsets: 0/0/0."""
    before = tmp_path / "before.csv"
    planned = tmp_path / "planned.csv"
    reset(group.name, "--to-earliest", "--export", str(before), "--export-plan", str(planned))
    committed = "".join(f"{group.topic},{p},{o}\n" for p, o in enumerate(COMMITTED))
    assert before.read_text() == committed
    assert planned.read_text() == "".join(f"{group.topic},{p},0\n" for p in range(len(SIZES)))
    assert _committed(mesh_admin, group.name, group.topic) == list(COMMITTED)  # a dry run

    reset(group.name, "--to-earliest", "--execute")
    assert _committed(mesh_admin, group.name, group.topic) == [0, 0, 0]

    reset(group.name, "--from-file", str(before), "--execute")  # undo
    assert _committed(mesh_admin, group.name, group.topic) == list(COMMITTED)


def test_export_says_which_partitions_had_no_offset_to_go_back_to(
    group: Group, reset: Callable[..., Result], tmp_path: Path
) -> None:
    before = tmp_path / "before.csv"
    other = unique_name("fresh")
    result = reset(other, "--topic", group.topic, "--to-earliest", "--export", str(before))
    assert before.read_text() == ""
    assert f"{group.topic}[0], {group.topic}[1], {group.topic}[2]: no committed offset" in (
        result.stderr
    )
