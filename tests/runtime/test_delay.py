"""Delayed delivery through the delay topics and the forwarder, against the real broker."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from confluent_kafka import Message, Producer

from mesh import Context, Event, Mesh, Settings
from mesh import headers as h
from mesh.config import TopicDefaults
from mesh.envelope import Envelope
from mesh.kafka.reader import Tail
from mesh.ops.dlq import dead_letter_topics
from mesh.runtime.delay import Delayed
from mesh.testing import unique_name
from tests.runtime.test_runtime_delivery import (
    handled_ids,
    load_relay,
    relay_env,
    show_logs,
    start_worker,
)
from tests.support import header, read_topic, running

#: How late a delayed event may reach its consumer on the shared 2-core test machine
#: (forwarder fetch wait + the consumer's fetch wait + scheduling); bench/ has the figures.
LATE_S = 1.5


def types() -> tuple[type[Event], type[Event]]:
    stem = unique_name("delay")

    class Reminder(Event, topic=f"{stem}.reminders", key="reminder_id", name="test.Reminder"):
        reminder_id: str

    class Nudge(Event, topic=f"{stem}.nudges", key="reminder_id", name="test.Nudge"):
        reminder_id: str

    return Reminder, Nudge


def timestamp_ms(msg: Message) -> int:
    _, ms = msg.timestamp()
    return ms


def test_delayed_publish_arrives_not_before_due_and_within_a_bound(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    Reminder, _ = types()
    app = make_app(Reminder)
    seen: dict[str, float] = {}  # reminder -> when handled (s)

    @app.agent("reader", consumes=Reminder)
    async def reader(event: Reminder) -> None:
        seen[event.reminder_id] = time.time()

    with running(app):
        # The forwarder joins its group in the background: wait until it forwards.
        app.publish(Reminder(reminder_id="warm-up"), deliver_at=datetime.now(UTC))
        app.publish(Reminder(reminder_id="warm-up-delayed"), deliver_at=_in_ms(100))
        _wait_for(lambda: "warm-up-delayed" in seen, 60)
        due: dict[str, int] = {}
        for n, delay_ms in enumerate((300, 1000, 1700, 2400, 2750, 4321)):
            due[f"r{n}"] = _in_ms(delay_ms)
            if n % 2:
                app.publish(Reminder(reminder_id=f"r{n}"), deliver_at=due[f"r{n}"])
            else:  # a datetime, through the async publish
                at = datetime.fromtimestamp(due[f"r{n}"] / 1000, UTC)
                asyncio.run(app.apublish(Reminder(reminder_id=f"r{n}"), deliver_at=at))
        _wait_for(lambda: set(due) <= set(seen), 30)

    delivered = {
        m.key().decode(): m
        for m in _records(mesh_settings, Reminder.topic())
        if m.key().decode() in due
    }
    assert set(delivered) == set(due)  # each exactly once
    for reminder, due_ms in due.items():
        msg = delivered[reminder]
        assert header(msg, h.DUE_TS) == str(due_ms)
        assert header(msg, h.DELAY_TARGET) == Reminder.topic()
        assert timestamp_ms(msg) >= due_ms, f"{reminder} forwarded early"
        assert seen[reminder] * 1000 >= due_ms, f"{reminder} handled early"
        assert seen[reminder] - due_ms / 1000 <= LATE_S, f"{reminder} late"


def test_ctx_emit_with_a_delay(make_app: Callable[..., Mesh], mesh_settings: Settings) -> None:
    Reminder, Nudge = types()
    app = make_app(Reminder, Nudge)
    emitted: dict[str, float] = {}
    nudged: dict[str, float] = {}

    @app.agent("scheduler", consumes=Reminder)
    async def scheduler(event: Reminder, ctx: Context) -> None:
        delay = "1500ms" if event.reminder_id == "str" else timedelta(seconds=1.5)
        ctx.emit(Nudge(reminder_id=event.reminder_id), delay=delay)
        emitted[event.reminder_id] = time.time()

    @app.agent("nudger", consumes=Nudge)
    async def nudger(event: Nudge, ctx: Context) -> None:
        nudged[event.reminder_id] = time.time()

    with running(app):
        root = app.publish(Reminder(reminder_id="warm-up"))
        _wait_for(lambda: "warm-up" in nudged, 60)  # the forwarder is assigned
        app.publish(Reminder(reminder_id="str"))
        app.publish(Reminder(reminder_id="timedelta"))
        _wait_for(lambda: {"str", "timedelta"} <= set(nudged), 30)

    for reminder in ("str", "timedelta"):
        waited = nudged[reminder] - emitted[reminder]
        assert 1.5 <= waited <= 1.5 + LATE_S, (reminder, waited)
    [warm] = [m for m in _records(mesh_settings, Nudge.topic()) if m.key() == b"warm-up"]
    assert header(warm, h.CORRELATION_ID) == root.correlation_id  # the chain goes on
    assert header(warm, h.CAUSATION_ID) == root.event_id


def test_a_delayed_record_refused_for_good_is_dead_lettered_and_the_one_behind_it_arrives(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    Reminder, _ = types()
    app = make_app(Reminder)
    seen: set[str] = set()

    @app.agent("reader", consumes=Reminder)
    async def reader(event: Reminder) -> None:
        seen.add(event.reminder_id)

    publisher = app._get_publisher()
    with running(app):
        app.publish(Reminder(reminder_id="warm-up"), deliver_at=_in_ms(100))
        _wait_for(lambda: "warm-up" in seen, 60)  # the forwarder is assigned
        # Two records due now, in one partition of a delay topic: the first one is over
        # the forwarder's message.max.bytes (librdkafka refuses it: MSG_SIZE_TOO_LARGE).
        envelope = Envelope.new_chain(Reminder.event_type(), produced_by="test")
        good = publisher.encode(Delayed(Reminder(reminder_id="good"), _in_ms(100)), envelope)
        big = Producer(
            {"bootstrap.servers": mesh_settings.bootstrap_servers, "message.max.bytes": 4_000_000}
        )
        oversize = b"x" * 1_500_000
        big.produce(good.topic, oversize, b"bad", partition=0, headers=good.headers)
        big.produce(good.topic, good.value, good.key, partition=0, headers=good.headers)
        assert big.flush(10) == 0
        _wait_for(lambda: "good" in seen, 30)
        (letter,) = read_topic(
            mesh_settings.bootstrap_servers, f"mesh.delay.{app.name}.dlq", 1, partitions=3
        )

    assert app.settings.delay_namespace == app.name
    assert letter.topic() in dead_letter_topics(app.settings, app=app)  # `mesh dlq list --app`
    assert letter.key() == b"bad"
    assert letter.value() is None  # too large even for the dead-letter topic
    assert header(letter, h.DLQ_VALUE_BYTES) == str(len(oversize))
    assert header(letter, h.DLQ_REASON) == "refused"
    assert header(letter, h.DLQ_AGENT) == "delay-forwarder"
    assert "MSG_SIZE_TOO_LARGE" in (header(letter, h.EXCEPTION_MESSAGE) or "")
    assert header(letter, h.DELAY_TARGET) == Reminder.topic()
    # Forwarded once: a refusal that rewound the batch would send it again and again.
    delivered = [m.key() for m in _records(mesh_settings, Reminder.topic())]
    assert delivered.count(b"good") == 1


def test_delayed_records_survive_kill_9_of_the_forwarder(
    mesh_settings: Settings, tmp_path: Path
) -> None:
    prefix = unique_name("relay")
    env = relay_env(mesh_settings, prefix, tmp_path / "schemas")
    relay = load_relay(prefix, tmp_path / "schemas")
    feeder = Mesh(
        "feeder",
        settings=mesh_settings.model_copy(
            # the relay app's delay namespace, whose forwarders deliver these
            update={"topics": TopicDefaults(partitions=4), "delay_namespace": relay.app.name}
        ),
        schemas_dir=tmp_path / "schemas",
    )
    feeder._get_publisher().ensure_topics([relay.Job, relay.JobDone])
    total = 200
    due_ms = _in_ms(8000)
    for i in range(total):  # no process runs yet: they wait in the delay topics
        feeder.publish(relay.Job(job_id=f"job-{i}"), deliver_at=due_ms + i)
    first = start_worker(env, tmp_path / "first.log")
    second: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(5)  # it joined the delay group and parked the records
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        second = start_worker(env, tmp_path / "second.log")
        serde = feeder._get_serde()
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
    jobs = _records(mesh_settings, relay.Job.topic())
    assert {serde.decode(m.value(), relay.Job).job_id for m in jobs} == handled
    for msg in jobs:  # at least once, never early
        assert timestamp_ms(msg) >= int(header(msg, h.DUE_TS) or 0)


def _in_ms(delay_ms: int) -> int:
    return time.time_ns() // 1_000_000 + delay_ms


def _wait_for(condition: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _records(settings: Settings, topic: str) -> list[Message]:
    with Tail(settings, topic, from_beginning=True, to_end=True) as reader:
        return list(reader.messages())
