"""Delivery guarantees under load and under faults, against the real broker."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from confluent_kafka import Consumer, Producer, TopicPartition

from mesh import Context, Event, Mesh, Settings
from mesh.config import TopicDefaults
from mesh.schema.files import generate_schemas
from mesh.serde import Serde
from mesh.testing import FAST_GROUP_CONFIG, unique_name
from tests.support import read_topic, running

REPO = Path(__file__).resolve().parents[2]


def test_in_partition_concurrency_keeps_key_order_and_never_commits_past_unfinished(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    topic = unique_name("conc")

    class Step(Event, topic=topic, key="entity", name="test.Step"):
        entity: str
        seq: int

    settings = mesh_settings.model_copy(update={"topics": TopicDefaults(partitions=1)})
    app = make_app(Step, settings=settings)
    starts: dict[str, list[tuple[int, float]]] = defaultdict(list)
    ends: dict[str, list[float]] = defaultdict(list)
    finished_at: dict[int, float] = {}
    in_flight = 0
    peak = 0

    @app.agent("stepper", consumes=Step, concurrency=100)
    async def stepper(event: Step, ctx: Context) -> None:
        nonlocal in_flight, peak
        starts[event.entity].append((event.seq, time.monotonic()))
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.2)
        in_flight -= 1
        ends[event.entity].append(time.monotonic())
        finished_at[ctx.offset] = time.monotonic()

    samples: list[tuple[float, int]] = []
    sampling = threading.Event()

    def sample() -> None:
        probe = Consumer(
            {"bootstrap.servers": settings.bootstrap_servers, "group.id": app.group_id("stepper")}
        )
        try:
            while not sampling.is_set():
                [tp] = probe.committed([TopicPartition(topic, 0)], timeout=10)
                samples.append((time.monotonic(), tp.offset))
                time.sleep(0.05)
        finally:
            probe.close()

    with running(app):
        producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
        for i in range(500):
            event = Step(entity=f"e{i % 50}", seq=i // 50)
            producer.produce(topic, app._get_serde().encode(event, topic), event.entity.encode())
        producer.flush(10)
        sampler = threading.Thread(target=sample)
        sampler.start()
        began = time.monotonic()
        deadline = began + 60
        while not samples or samples[-1][1] < 500:
            assert time.monotonic() < deadline, f"committed {samples[-1:]} of 500"
            time.sleep(0.1)
        elapsed = time.monotonic() - began
        sampling.set()
        sampler.join()

    assert len(finished_at) == 500
    # Many events of the one partition were in flight together...
    assert peak >= 40, peak
    # ...10 sequential steps of 200 ms per key: well under the 100 s of a serial consumer.
    assert elapsed < 20, elapsed
    for entity, seen in starts.items():
        assert [seq for seq, _ in seen] == list(range(10)), entity
        for (_, started), prev_end in zip(seen[1:], ends[entity], strict=False):
            assert started >= prev_end, f"{entity}: a step started before the previous ended"
    assert len(samples) > 5
    for when, committed in samples:
        if committed > 0:
            unfinished = [o for o in range(committed) if finished_at.get(o, float("inf")) > when]
            assert not unfinished, f"committed {committed} while {unfinished[:5]} were unfinished"


def test_a_worker_paused_by_backpressure_resumes_when_its_partitions_are_revoked(
    make_app: Callable[..., Mesh], mesh_settings: Settings, schemas_dir: Path
) -> None:
    """Revoked partitions take their buffered events along: the pause must lift with them."""
    topic = unique_name("pause")

    class Item(Event, topic=topic, key="lane", name="test.Item"):
        lane: str
        seq: int

    settings = mesh_settings.model_copy(update={"topics": TopicDefaults(partitions=2)})
    first = make_app(Item, settings=settings)
    second = Mesh(first.name, settings=settings, schemas_dir=schemas_dir)
    handled: set[tuple[int, int]] = set()

    async def work(event: Item, ctx: Context) -> None:
        await asyncio.sleep(0.3 if event.seq < 100 else 0)
        handled.add((ctx.partition, event.seq))

    for app in (first, second):
        app.agent("worker", consumes=Item, concurrency=2)(work)
    producer = Producer({"bootstrap.servers": settings.bootstrap_servers})
    serde = first._get_serde()

    def produce(seqs: range) -> None:
        for partition in (0, 1):
            for seq in seqs:  # one key per partition: one event at a time, the rest buffered
                event = Item(lane=f"p{partition}", seq=seq)
                producer.produce(
                    topic, serde.encode(event, topic), event.lane.encode(), partition=partition
                )
        producer.flush(10)

    def wait_for(expected: set[tuple[int, int]]) -> None:
        deadline = time.monotonic() + 60
        while not expected <= handled:
            missing = sorted(expected - handled)
            assert time.monotonic() < deadline, f"never handled: {missing[:10]}"
            time.sleep(0.1)

    with running(first):
        produce(range(30))  # 9 s of work per partition: paused by backpressure throughout
        time.sleep(0.5)
        with running(second):  # takes one partition from the first app while it is paused
            wait_for({(p, seq) for p in (0, 1) for seq in range(30)})
        # The second app left: the first gets its partition back, now with nothing buffered.
        produce(range(100, 110))
        wait_for({(p, seq) for p in (0, 1) for seq in range(100, 110)})


def relay_env(mesh_settings: Settings, prefix: str, schemas: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "RELAY_PREFIX": prefix,
        "RELAY_SCHEMAS": str(schemas),
        "MESH_BOOTSTRAP_SERVERS": mesh_settings.bootstrap_servers,
        "MESH_REGISTRY_URL": mesh_settings.registry_url,
        "MESH_TOPICS__PARTITIONS": "4",
        "MESH_KAFKA": json.dumps(FAST_GROUP_CONFIG),
    }


def load_relay(prefix: str, schemas: Path) -> ModuleType:
    """The relay app module with this test's topics, its schemas written to *schemas*."""
    os.environ["RELAY_PREFIX"] = prefix
    try:
        sys.modules.pop("tests.apps.relay", None)
        relay = importlib.import_module("tests.apps.relay")
    finally:
        del os.environ["RELAY_PREFIX"]
    generate_schemas([relay.Job, relay.JobDone], schemas)
    return relay


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A ``mesh run`` process of the relay app, logging to *log* (shown when a test fails)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "mesh", "run", "tests.apps.relay:app"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def show_logs(directory: Path) -> None:
    """Print the worker logs; pytest shows them when the test failed."""
    for log in sorted(directory.glob("*.log")):
        print(f"----- {log.name}\n{log.read_text(errors='replace')[-20_000:]}")


def handled_ids(settings: Settings, relay: ModuleType, serde: Serde, total: int) -> set[str]:
    """Job ids in the relay's output, waiting until all *total* distinct ones are there."""
    count = total
    while True:  # duplicates are allowed (at-least-once); gaps are not
        done = read_topic(
            settings.bootstrap_servers, relay.JobDone.topic(), count, partitions=4, timeout_s=120
        )
        handled = {serde.decode(m.value(), relay.JobDone).job_id for m in done}
        if len(handled) >= total:
            return handled
        count = len(done) + total - len(handled)


def test_kill_9_of_a_worker_loses_nothing(mesh_settings: Settings, tmp_path: Path) -> None:
    prefix = unique_name("relay")
    env = relay_env(mesh_settings, prefix, tmp_path / "schemas")
    relay = load_relay(prefix, tmp_path / "schemas")
    workers = [start_worker(env, tmp_path / f"worker-{n}.log") for n in range(2)]
    try:
        time.sleep(2)  # both join the group before the stream starts
        app = Mesh(
            "feeder",
            settings=mesh_settings.model_copy(update={"topics": TopicDefaults(partitions=4)}),
        )
        total = 5000
        producer = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
        serde = app._get_serde()
        for i in range(total):
            job = relay.Job(job_id=f"job-{i}")
            producer.produce(
                relay.Job.topic(), serde.encode(job, relay.Job.topic()), job.job_id.encode()
            )
            if i == total // 5:
                producer.flush(10)
                read_topic(
                    mesh_settings.bootstrap_servers, relay.JobDone.topic(), 200, partitions=4
                )
                workers[0].send_signal(signal.SIGKILL)  # mid-stream, no goodbye
        producer.flush(10)
        handled = handled_ids(mesh_settings, relay, serde, total)
        assert handled == {f"job-{i}" for i in range(total)}
        assert workers[0].wait(10) == -signal.SIGKILL
        survivor = workers[1]
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(60) == 0
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        show_logs(tmp_path)


def test_kill_9_while_records_wait_in_retry_topics_loses_nothing(
    mesh_settings: Settings, tmp_path: Path
) -> None:
    prefix = unique_name("relay")
    env = {**relay_env(mesh_settings, prefix, tmp_path / "schemas"), "RELAY_FAIL_FIRST": "1"}
    relay = load_relay(prefix, tmp_path / "schemas")
    app = Mesh(
        "feeder", settings=mesh_settings.model_copy(update={"topics": TopicDefaults(partitions=4)})
    )
    serde = app._get_serde()
    retry_topic = f"{relay.Job.topic()}.{prefix}-app.relay.retry.2s"
    first = start_worker(env, tmp_path / "first.log")
    second = None
    try:
        total = 500
        producer = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
        for i in range(total):
            job = relay.Job(job_id=f"job-{i}")
            producer.produce(
                relay.Job.topic(), serde.encode(job, relay.Job.topic()), job.job_id.encode()
            )
        producer.flush(10)
        # Every first attempt fails: wait until all records sit in the 2 s retry topic...
        read_topic(mesh_settings.bootstrap_servers, retry_topic, total, partitions=4)
        first.send_signal(signal.SIGKILL)  # ...and kill the worker before any is due
        assert first.wait(10) == -signal.SIGKILL
        second = start_worker(env, tmp_path / "second.log")
        handled = handled_ids(mesh_settings, relay, serde, total)
        assert handled == {f"job-{i}" for i in range(total)}
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        show_logs(tmp_path)


def test_lost_partitions_are_dropped_at_once_not_drained(
    mesh_settings: Settings, tmp_path: Path
) -> None:
    """A member that missed its session (here: SIGSTOPped past it) has lost its partitions
    to the group already: draining them would only hold up its rejoin."""
    prefix = unique_name("relay")
    env = relay_env(mesh_settings, prefix, tmp_path / "schemas")
    env["MESH_TOPICS__PARTITIONS"] = "1"
    relay = load_relay(prefix, tmp_path / "schemas")
    log = tmp_path / "stuck.log"
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "mesh", "run", "tests.apps.stuck:app"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    producer = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
    serde = Mesh("feeder", settings=mesh_settings)._get_serde()

    def send(job_id: str) -> None:
        job = relay.Job(job_id=job_id)
        producer.produce(
            relay.Job.topic(), serde.encode(job, relay.Job.topic()), b"k" + job_id.encode()
        )
        assert producer.flush(10) == 0

    try:
        deadline = time.monotonic() + 60
        while "assigned" not in log.read_text():
            assert time.monotonic() < deadline, "the worker never joined"
            time.sleep(0.2)
        send("stuck-0")  # in flight for a minute
        time.sleep(1)
        worker.send_signal(signal.SIGSTOP)
        time.sleep(10)  # past the 6 s session: the broker evicts the member
        worker.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        send("fresh-0")
        [done] = read_topic(mesh_settings.bootstrap_servers, relay.JobDone.topic(), 1, timeout_s=60)
        took = time.monotonic() - resumed
        assert serde.decode(done.value(), relay.JobDone).job_id == "fresh-0"
        assert took < 20, f"the fresh job waited {took:.0f}s (a drain of the lost partition)"
        assert "lost" in log.read_text()
    except BaseException:
        show_logs(tmp_path)
        raise
    finally:
        worker.kill()
        worker.wait(10)
