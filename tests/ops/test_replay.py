"""`mesh replay` on a real broker: exact ranges by offset, time and group, filters, sinks."""

from __future__ import annotations

import base64
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from typer.testing import CliRunner, Result

import mesh.cli
from mesh import Event, Mesh, Settings, headers
from mesh.config import RetryPolicy
from mesh.kafka.reader import Tail
from mesh.kafka.topics import existing_topics
from mesh.ops.replay import ReplaySummary, plan_replay
from mesh.ops.sinks import _Acks
from mesh.serde import Serde
from mesh.testing import unique_name
from tests.support import read_topic, running

RECORDS = 20
PARTITIONS = 2


class Order(Event, topic="replay.orders", key="order_id", name="test.replay.Order"):
    order_id: str
    n: int


@dataclass(frozen=True)
class Source:
    """RECORDS records; record i sits in partition i % 2 at offset i // 2, CreateTime base + i s."""

    topic: str
    base_ms: int

    @staticmethod
    def where(i: int) -> tuple[int, int]:
        return i % PARTITIONS, i // PARTITIONS

    def ts(self, i: int) -> int:
        return self.base_ms + i * 1000


def _headers(i: int) -> list[tuple[str, bytes]]:
    found = [
        (headers.EVENT_TYPE, b"test.replay.Order" if i % 5 else b"test.replay.Special"),
        (headers.CORRELATION_ID, f"c{i % 3}".encode()),
        ("tenant", b"a" if i < 10 else b"b"),
    ]
    if i % 4 == 0:
        found += [
            (headers.EXCEPTION_CLASS, b"mypkg.errors.BadInput"),
            (headers.DLQ_REASON, b"fatal"),
        ]
    elif i % 4 == 2:
        found += [(headers.EXCEPTION_CLASS, b"ValueError"), (headers.DLQ_REASON, b"exhausted")]
    return found


@pytest.fixture
def source(mesh_settings: Settings, mesh_topic: Callable[..., str]) -> Source:
    topic = mesh_topic(partitions=PARTITIONS)
    serde = Serde.from_settings(mesh_settings)
    base_ms = (int(time.time()) - 3600) * 1000  # an hour ago, whole seconds
    producer = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
    for i in range(RECORDS):
        producer.produce(
            topic,
            serde.encode(Order(order_id=f"o{i}", n=i), topic),
            f"k{i % 4}".encode(),
            partition=i % PARTITIONS,
            timestamp=base_ms + i * 1000,
            headers=_headers(i),
        )
    assert producer.flush(10) == 0
    return Source(topic, base_ms)


@pytest.fixture
def cli(mesh_settings: Settings) -> Callable[..., Result]:
    """``mesh ARGS`` in this process (apps defined by tests are importable here only)."""
    runner = CliRunner()
    env = {
        "MESH_BOOTSTRAP_SERVERS": mesh_settings.bootstrap_servers,
        "MESH_REGISTRY_URL": mesh_settings.registry_url,
    }

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(mesh.cli.app, list(args), env=env)
        assert result.exit_code == code, (result.output, result.exception)
        return result

    return run


def _replayed(cli: Callable[..., Result], *args: str) -> list[int]:
    """The ``n`` of each record `mesh replay --format json` printed, checking its place."""
    lines = cli("replay", *args, "--format", "json").stdout.splitlines()
    found = []
    for line in lines:
        record = json.loads(line)
        n = record["value"]["n"]
        assert (record["partition"], record["offset"]) == Source.where(n)
        assert record["key"] == f"k{n % 4}"
        found.append(n)
    return sorted(found)


def test_by_offset(source: Source, cli: Callable[..., Result]) -> None:
    # offsets 3..6 of each partition: records 6..13
    assert _replayed(cli, source.topic, "--from-offset", "3", "--to-offset", "7") == list(
        range(6, 14)
    )
    # the last two of each partition; one partition only
    assert _replayed(cli, source.topic, "--from-offset", "-2") == [16, 17, 18, 19]
    assert _replayed(cli, f"{source.topic}:1", "--from-offset", "-2") == [17, 19]
    assert len(_replayed(cli, source.topic, "--limit", "3", "--from-beginning")) == 3
    assert _replayed(cli, f"{source.topic}:0", "--limit", "3") == [0, 2, 4]


def test_by_time_range(source: Source, cli: Callable[..., Result]) -> None:
    def ms(value: int) -> str:
        return str(value)

    # [ts(6), ts(12)): records 6..11 exactly, whatever the broker's own time index says
    assert _replayed(
        cli, source.topic, "--from-time", ms(source.ts(6)), "--to-time", ms(source.ts(12))
    ) == list(range(6, 12))
    # between two records: the next one
    assert _replayed(cli, source.topic, "--from-time", ms(source.ts(6) + 1)) == list(
        range(7, RECORDS)
    )
    # before the first record: everything; after the last: nothing
    everything = _replayed(cli, source.topic, "--from-time", ms(source.base_ms - 600_000))
    assert everything == list(range(RECORDS))
    after_last = ms(source.ts(RECORDS - 1) + 1)
    assert _replayed(cli, source.topic, "--from-time", after_last) == []
    assert _replayed(cli, source.topic, "--to-time", after_last) == list(range(RECORDS))
    assert _replayed(cli, source.topic, "--to-time", ms(source.base_ms - 1)) == []
    # ISO-8601 with a zone; a duration back from now covers them all
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(source.ts(15) / 1000))
    assert _replayed(cli, source.topic, "--from-time", iso) == list(range(15, RECORDS))
    assert _replayed(cli, source.topic, "--since", "2h") == list(range(RECORDS))


def test_by_group(source: Source, cli: Callable[..., Result], mesh_settings: Settings) -> None:
    group = unique_name("replay-group")
    consumer = Consumer({"bootstrap.servers": mesh_settings.bootstrap_servers, "group.id": group})
    consumer.commit(
        offsets=[TopicPartition(source.topic, 0, 4), TopicPartition(source.topic, 1, 7)],
        asynchronous=False,
    )
    consumer.close()
    # partition 0 from offset 4 (records 8, 10, ..., 18), partition 1 from 7 (15, 17, 19)
    assert _replayed(cli, source.topic, "--from-group", group) == [
        8,
        10,
        12,
        14,
        15,
        16,
        17,
        18,
        19,
    ]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--key", "k1"], [i for i in range(RECORDS) if i % 4 == 1]),
        (["--header", "tenant=b"], list(range(10, RECORDS))),
        (["--event-type", "test.replay.Special"], [0, 5, 10, 15]),
        (["--correlation-id", "c2"], [i for i in range(RECORDS) if i % 3 == 2]),
        (["--error-class", "BadInput"], [i for i in range(RECORDS) if i % 4 == 0]),
        (["--error-class", "mypkg.errors.BadInput"], [i for i in range(RECORDS) if i % 4 == 0]),
        (["--reason", "exhausted"], [i for i in range(RECORDS) if i % 4 == 2]),
        (  # combined with AND
            ["--header", "tenant=a", "--reason", "fatal", "--correlation-id", "c0"],
            [0],
        ),
    ],
)
def test_filters(
    source: Source, cli: Callable[..., Result], args: list[str], expected: list[int]
) -> None:
    assert _replayed(cli, source.topic, *args) == expected


def _all(settings: Settings, topic: str) -> list:
    with Tail(settings, topic, from_beginning=True, to_end=True) as reader:
        return sorted(reader.messages(), key=lambda m: (m.partition(), m.offset()))


def test_to_topic_copies_byte_for_byte_and_the_replay_count_stops_loops(
    source: Source, cli: Callable[..., Result], mesh_settings: Settings, mesh_admin: AdminClient
) -> None:
    target = unique_name("replay-copy")
    dry = cli("replay", source.topic, "--to-topic", target, "--json")
    summary = json.loads(dry.stdout)
    assert (summary["dry_run"], summary["matched"], summary["written"]) == (True, RECORDS, RECORDS)
    assert target not in existing_topics(mesh_admin)  # a dry run writes nothing

    done = json.loads(
        cli("replay", source.topic, "--to-topic", target, "--execute", "--json").stdout
    )
    assert (done["dry_run"], done["written"], done["failed"]) == (False, RECORDS, 0)
    assert existing_topics(mesh_admin)[target] == PARTITIONS
    originals, copies = _all(mesh_settings, source.topic), _all(mesh_settings, target)
    assert len(copies) == RECORDS
    replay_id = None
    for original, copy in zip(originals, copies, strict=True):
        assert (copy.partition(), copy.offset()) == (original.partition(), original.offset())
        assert copy.key() == original.key()
        assert copy.value() == original.value()
        assert copy.headers()[:-2] == original.headers()
        (id_name, id_value), (count_name, count_value) = copy.headers()[-2:]
        assert (id_name, count_name, count_value) == (headers.REPLAY_ID, headers.REPLAY_COUNT, b"1")
        assert replay_id in (None, id_value)
        replay_id = id_value

    # A loop: the copies replayed into their own topic, again and again.
    loop = ("replay", target, "--to-topic", target, "--execute", "--max-replays", "2", "--json")
    first = json.loads(cli(*loop).stdout)
    assert (first["matched"], first["written"], first["skipped"]) == (RECORDS, RECORDS, 0)
    second = json.loads(cli(*loop).stdout)  # count 1 -> 2 again; the count-2 copies stop
    assert (second["matched"], second["written"], second["skipped"]) == (
        2 * RECORDS,
        RECORDS,
        RECORDS,
    )
    counts = [dict(m.headers())[headers.REPLAY_COUNT] for m in _all(mesh_settings, target)]
    assert sorted(counts) == [b"1"] * RECORDS + [b"2"] * 2 * RECORDS


@pytest.fixture
def failed_chain(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> Iterator[tuple[Mesh, str, type[Event], type[Event], set[str]]]:
    """An app whose planner dead-lettered t1 and t2 (ValueError) and handled t3."""
    stem = unique_name("replay-agent")

    class Task(Event, topic=f"{stem}.tasks", key="task_id", name="test.replay.Task"):
        task_id: str

    class Plan(Event, topic=f"{stem}.plans", key="task_id", name="test.replay.Plan"):
        task_id: str
        fixed: bool

    app = make_app(Task, Plan)
    broken = {"t1", "t2"}

    @app.agent("planner", consumes=Task, retry=RetryPolicy(attempts=1))
    async def planner(event: Task) -> Plan:
        if event.task_id in broken:
            raise ValueError(f"cannot plan {event.task_id}")
        return Plan(task_id=event.task_id, fixed=not {"t1", "t2"} <= broken)

    module = types.ModuleType(stem.replace("-", "_"))
    module.app = app  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    with running(app):
        for task_id in ("t1", "t2", "t3"):
            app.publish(Task(task_id=task_id))
        dlq = f"{Task.topic()}.{app.group_id('planner')}.dlq"
        read_topic(mesh_settings.bootstrap_servers, dlq, 2, partitions=3)
        read_topic(mesh_settings.bootstrap_servers, Plan.topic(), 1, partitions=3)
    try:
        yield app, f"{module.__name__}:app", Task, Plan, broken
    finally:
        del sys.modules[module.__name__]


def _committed(admin: AdminClient, group: str) -> dict[tuple[str, int], int]:
    (future,) = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
    return {(tp.topic, tp.partition): tp.offset for tp in future.result().topic_partitions}


def test_a_refused_copy_counts_as_failed_never_as_written(
    mesh_settings: Settings, mesh_topic: Callable[..., str]
) -> None:
    """librdkafka refuses a record in a delivery report (before it knows the topic) or
    in produce() itself (after): both count as failed, so the command exits 1."""
    topic = mesh_topic(partitions=1)
    acks = _Acks(mesh_settings)
    for partition in (0, 7, 0, 7):  # partition 7 does not exist
        acks.send(topic, b"v", None, [], partition)
    acks.producer.flush(10)  # now it knows the topic has one partition
    acks.send(topic, b"v", None, [], 7)
    summary = ReplaySummary(plan=plan_replay(mesh_settings, topic), dry_run=False)
    acks.settle(summary)
    assert (summary.written, summary.failed) == (2, 3)
    assert summary.problems
    assert all("Unknown partition" in problem for problem in summary.problems)
    assert len(read_topic(mesh_settings.bootstrap_servers, topic, 2, timeout_s=10)) == 2


def test_to_agent_reruns_a_fixed_handler_without_moving_the_live_group(
    failed_chain: tuple[Mesh, str, type[Event], type[Event], set[str]],
    cli: Callable[..., Result],
    mesh_settings: Settings,
    mesh_admin: AdminClient,
) -> None:
    app, spec, _task, _plan, broken = failed_chain
    group = app.group_id("planner")
    before = _committed(mesh_admin, group)
    assert sum(before.values()) == 3  # the live group consumed all three tasks

    still_broken = cli(
        "replay", "--dlq", "planner", "--app", spec, "--to-agent", f"{spec}:planner", code=1
    )
    assert "read 2, matched 2, would write 0, skipped 0, failed 2" in still_broken.stdout
    assert "ValueError: cannot plan t1" in still_broken.stderr

    broken.clear()  # the fix
    out = unique_name("replay-fixed")
    dry = cli("replay", "--dlq", "planner", "--app", spec, "--to-agent", f"{spec}:planner")
    emitted = [json.loads(line) for line in dry.stdout.splitlines() if line.startswith("{")]
    assert sorted(e["value"]["task_id"] for e in emitted) == ["t1", "t2"]
    assert all(e["value"]["fixed"] for e in emitted)

    cli(
        "replay",
        "--dlq",
        "planner",
        "--app",
        spec,
        "--error-class",
        "ValueError",
        "--to-agent",
        f"{spec}:planner",
        "--emit-to-topic",
        out,
        "--execute",
    )
    plans = read_topic(mesh_settings.bootstrap_servers, out, 2, partitions=3)
    serde = Serde.from_settings(mesh_settings)
    assert sorted(serde.decode_record(m.value())["task_id"] for m in plans) == ["t1", "t2"]
    # same chain: the emits are caused by the dead-lettered events
    for msg in plans:
        found = dict(msg.headers())
        assert found[headers.PRODUCED_BY] == b"planner"
        assert found[headers.CAUSATION_ID]
    assert _committed(mesh_admin, group) == before


def _mesh(*args: str, settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MESH_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "MESH_REGISTRY_URL": settings.registry_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_arguments_exit_2_with_one_line(source: Source, mesh_settings: Settings) -> None:
    future = str(int(time.time() * 1000) + 3_600_000)
    cases = {
        (unique_name("missing"),): "does not exist",
        (f"{source.topic}:0,5",): "not 5",
        (source.topic, "--from-time", future): "in the future",
        (source.topic, "--from-beginning", "--from-offset", "3"): "give one start",
        (source.topic, "--from-time", "2026-01-01T00:00:00"): "has no zone",
        (source.topic, "--rate", "fast"): "--rate",
    }
    for args, message in cases.items():
        result = _mesh("replay", *args, settings=mesh_settings)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert message in result.stderr, (args, result.stderr)


def test_raw_format_is_lossless(source: Source, mesh_settings: Settings) -> None:
    result = _mesh(
        "replay", f"{source.topic}:1", "--limit", "1", "--format", "raw", settings=mesh_settings
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert (record["partition"], record["offset"], record["timestamp"]) == (1, 0, source.ts(1))
    assert base64.b64decode(record["key"]) == b"k1"
    assert [name for name, _ in record["headers"]] == [name for name, _ in _headers(1)]
    serde = Serde.from_settings(mesh_settings)
    assert serde.decode_record(base64.b64decode(record["value"])) == {"order_id": "o1", "n": 1}


def test_follow_delivers_new_records_until_ctrl_c(source: Source, mesh_settings: Settings) -> None:
    env = {
        **os.environ,
        "MESH_BOOTSTRAP_SERVERS": mesh_settings.bootstrap_servers,
        "MESH_REGISTRY_URL": mesh_settings.registry_url,
    }
    lines: queue.Queue[str] = queue.Queue()

    def values(count: int) -> list[int]:
        return sorted(json.loads(lines.get(timeout=30))["value"]["n"] for _ in range(count))

    with subprocess.Popen(
        [sys.executable, "-m", "mesh", "replay", source.topic, "--follow", "--json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        out, err = proc.stdout, proc.stderr
        assert out is not None
        assert err is not None

        def read() -> None:
            for line in out:
                lines.put(line)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            assert values(RECORDS) == list(range(RECORDS))  # the history, then it waits
            serde = Serde.from_settings(mesh_settings)
            producer = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
            for i in range(RECORDS, RECORDS + 3):
                value = serde.encode(Order(order_id=f"o{i}", n=i), source.topic)
                producer.produce(source.topic, value, f"k{i % 4}".encode(), partition=i % 2)
            assert producer.flush(10) == 0
            assert values(3) == [RECORDS, RECORDS + 1, RECORDS + 2]
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=30)
        finally:
            proc.kill()
            reader.join()
        stderr = err.read()
    assert proc.returncode == 0, stderr
    summary = json.loads(stderr.strip().splitlines()[-1])
    assert summary["plan"]["records"] is None  # an open range
    assert (summary["read"], summary["written"], summary["failed"]) == (RECORDS + 3, RECORDS + 3, 0)
    assert lines.empty()


def test_rate_paces_the_records(source: Source, cli: Callable[..., Result]) -> None:
    result = cli("replay", source.topic, "--rate", "50/s", "--json")
    assert len(result.stdout.splitlines()) == RECORDS
    summary = json.loads(result.stderr.strip().splitlines()[-1])
    # the first record at once, then one every 1/50 s: the last after 19/50 s
    assert summary["written"] == RECORDS
    assert summary["seconds"] >= (RECORDS - 1) / 50 * 0.95
