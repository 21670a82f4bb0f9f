"""Retries through delay topics, timeouts and dead letters, against the real broker.

Dead letters and retries are checked against the header contract of :mod:`mesh.headers`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from mesh import Context, Envelope, Event, Mesh, Settings
from mesh import headers as h
from mesh.config import RetryPolicy
from mesh.errors import DeserializationError
from mesh.headers import DUE_TS
from mesh.kafka.reader import Tail
from mesh.ops.dlq import DeadLetterFilter, read_dead_letters
from mesh.runtime.failure import DeadLetterReason
from mesh.serde import Serde
from mesh.testing import unique_name
from tests.support import committed_offsets, header, read_topic, running


class Flaky(Exception):
    """A transient failure."""


def types() -> tuple[type[Event], type[Event]]:
    stem = unique_name("retry")

    class Job(Event, topic=f"{stem}.jobs", key="job_id", name="test.Job"):
        job_id: str
        n: int

    class Done(Event, topic=f"{stem}.done", key="job_id", name="test.Done"):
        job_id: str
        attempt: int

    return Job, Done


def test_transient_failures_are_retried_on_time_while_other_events_flow(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    Job, Done = types()
    app = make_app(Job, Done)
    retried: dict[str, tuple[float, float]] = {}  # job -> (due s, started s)
    finished: dict[str, float] = {}

    @app.agent(
        "worker",
        consumes=Job,
        retry=RetryPolicy(attempts=3, backoff="fixed", initial_delay="1s"),
    )
    async def worker(event: Job, ctx: Context) -> Done:
        if ctx.attempt == 1 and event.n % 10 == 0:
            raise Flaky(f"job {event.n} failed once")
        if ctx.attempt > 1:
            retried[event.job_id] = (int(ctx.headers[DUE_TS]) / 1000, time.time())
        finished[event.job_id] = time.time()
        return Done(job_id=event.job_id, attempt=ctx.attempt)

    with running(app):
        for n in range(100):
            app.publish(Job(job_id=f"a{n}", n=n))
        time.sleep(0.3)  # the first failures are waiting in the retry topic now
        second_wave_sent = time.time()
        for n in range(100):
            app.publish(Job(job_id=f"b{n}", n=10 * n + 1))  # none of these fail
        done = read_topic(mesh_settings.bootstrap_servers, Done.topic(), 200, partitions=3)

    assert len({m.key() for m in done}) == 200
    assert set(retried) == {f"a{n}" for n in range(0, 100, 10)}
    for job, (due, started) in retried.items():
        assert started >= due, f"{job} retried {due - started:.3f}s early"
        assert started - due <= 0.5, f"{job} retried {started - due:.3f}s late"
    # Healthy events published after the failures finished before the retries fired.
    healthy = [finished[f"b{n}"] for n in range(100)]
    assert max(healthy) < min(due for due, _ in retried.values())
    assert min(healthy) >= second_wave_sent


def assert_failure_contract(
    dead: Message,
    *,
    source: Message,
    group: str,
    attempt: int,
    kind: str,
    reason: str,
    error_class: str,
    agent: str,
) -> None:
    """Every header of the contract on a dead letter of *source* (the first-hop record)."""
    _, dead_ms = dead.timestamp()
    _, source_ms = source.timestamp()
    assert dead.key() == source.key()
    assert dead.value() == source.value()  # byte for byte
    assert header(dead, h.ORIGINAL_TOPIC) == source.topic()
    assert header(dead, h.ORIGINAL_PARTITION) == str(source.partition())
    assert header(dead, h.ORIGINAL_OFFSET) == str(source.offset())
    assert header(dead, h.ORIGINAL_TIMESTAMP) == str(source_ms)
    assert header(dead, h.ORIGINAL_GROUP) == group
    assert header(dead, h.ATTEMPT) == str(attempt)
    assert source_ms <= int(header(dead, h.FIRST_FAILURE_TS) or 0) <= dead_ms
    assert header(dead, h.ERROR_KIND) == kind
    assert header(dead, h.DLQ_REASON) == reason
    assert header(dead, h.DLQ_AGENT) == agent
    assert header(dead, h.EXCEPTION_CLASS) == error_class
    assert header(dead, h.EXCEPTION_MESSAGE) is not None  # empty for a bare TimeoutError
    stacktrace = header(dead, h.EXCEPTION_STACKTRACE) or ""
    assert stacktrace.startswith("Traceback (most recent call last)")
    assert error_class.rsplit(".", 1)[-1] in stacktrace.splitlines()[-1]
    assert header(dead, h.DUE_TS) is None  # retry bookkeeping stays behind
    names = [name for name, _ in dead.headers() or []]
    failure_names = [name for name in names if name in h.FAILURE_HEADERS]
    assert len(failure_names) == len(set(failure_names)), "a failure header is repeated"


def records(settings: Settings, topic: str) -> list[Message]:
    """Everything *topic* holds now."""
    with Tail(settings, topic, from_beginning=True, to_end=True) as reader:
        return list(reader.messages())


def test_always_failing_event_is_dead_lettered_after_exactly_attempts_tries(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    Job, Done = types()
    app = make_app(Job, Done)
    tries: list[int] = []

    @app.agent(
        "worker",
        consumes=Job,
        retry=RetryPolicy(attempts=3, initial_delay="200ms", multiplier=2),
    )
    async def worker(event: Job, ctx: Context) -> Done:
        if event.job_id == "doomed":
            tries.append(ctx.attempt)
            raise Flaky("never works")
        return Done(job_id=event.job_id, attempt=ctx.attempt)

    @app.agent("auditor", consumes=Done)
    async def auditor(event: Done) -> None:  # another agent of the chain keeps running
        return None

    group = app.group_id("worker")
    with running(app):
        root = app.publish(Job(job_id="doomed", n=1))
        app.publish(Job(job_id="fine", n=2))
        dlq = f"{Job.topic()}.{group}.dlq"
        [dead] = read_topic(mesh_settings.bootstrap_servers, dlq, 1, partitions=3)
        [ok] = read_topic(mesh_settings.bootstrap_servers, Done.topic(), 1, partitions=3)

    assert tries == [1, 2, 3]
    assert ok.key() == b"fine"
    [source] = [m for m in records(mesh_settings, Job.topic()) if m.key() == b"doomed"]
    assert_failure_contract(
        dead,
        source=source,
        group=group,
        attempt=3,
        kind="transient",
        reason="exhausted",
        error_class=f"{__name__}.Flaky",
        agent="worker",
    )
    assert header(dead, h.EXCEPTION_MESSAGE) == "never works"
    assert header(dead, h.CORRELATION_ID) == root.correlation_id
    assert header(dead, h.EVENT_ID) == root.event_id
    # The hops: attempt and due time per hop, the first hop's origin and failure time kept.
    hops = [
        *records(mesh_settings, f"{Job.topic()}.{group}.retry.200ms"),
        *records(mesh_settings, f"{Job.topic()}.{group}.retry.400ms"),
    ]
    assert [header(m, h.ATTEMPT) for m in hops] == ["1", "2"]
    for hop in hops:
        _, hop_ms = hop.timestamp()
        assert 0 < int(header(hop, h.DUE_TS) or 0) - hop_ms <= 500
        assert header(hop, h.ERROR_KIND) == "transient"
        assert header(hop, h.DLQ_REASON) is None
        for name in (h.ORIGINAL_TOPIC, h.ORIGINAL_OFFSET, h.FIRST_FAILURE_TS):
            assert header(hop, name) == header(dead, name)


def test_a_record_whose_next_retry_would_be_due_past_the_deadline_is_dead_lettered(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    Job, Done = types()
    app = make_app(Job, Done)
    tries: list[int] = []
    policy = RetryPolicy(attempts=10, backoff="fixed", initial_delay="300ms", deadline="1s")

    @app.agent("worker", consumes=Job, retry=policy)
    async def worker(event: Job, ctx: Context) -> None:
        tries.append(ctx.attempt)
        raise Flaky("never works")

    group = app.group_id("worker")
    dlq = f"{Job.topic()}.{group}.dlq"
    with running(app):
        app.publish(Job(job_id="doomed", n=1))
        [dead] = read_topic(mesh_settings.bootstrap_servers, dlq, 1, partitions=3)

    assert tries == list(range(1, len(tries) + 1))
    assert 2 <= len(tries) < 10  # retried while a retry fitted, given up long before attempts
    [source] = records(mesh_settings, Job.topic())
    assert_failure_contract(
        dead,
        source=source,
        group=group,
        attempt=len(tries),
        kind="transient",
        reason="deadline",
        error_class=f"{__name__}.Flaky",
        agent="worker",
    )
    # Every retry scheduled was due within the deadline; the one refused would not have been.
    first_ms = int(header(dead, h.FIRST_FAILURE_TS) or 0)
    hops = records(mesh_settings, f"{Job.topic()}.{group}.retry.300ms")
    assert [header(m, h.ATTEMPT) for m in hops] == [str(n) for n in range(1, len(tries))]
    assert all(int(header(m, h.DUE_TS) or 0) <= first_ms + 1000 for m in hops)
    _, dead_ms = dead.timestamp()
    assert dead_ms + 300 > first_ms + 1000
    # `mesh dlq list --reason deadline` finds it.
    found = read_dead_letters(
        mesh_settings, [dlq], where=DeadLetterFilter(reason=DeadLetterReason.DEADLINE)
    )
    [letter] = list(found)
    assert letter.id == f"{dlq}:{dead.partition()}:{dead.offset()}"
    assert letter.summary()["attempts"] == len(tries)


def test_non_retryable_errors_and_unencodable_outputs_go_straight_to_the_dlq_as_fatal(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    Job, Done = types()
    app = make_app(Job, Done)
    tries: list[str] = []

    @app.agent(
        "worker", consumes=Job, retry=RetryPolicy(attempts=5, non_retryable=("LookupError",))
    )
    async def worker(event: Job) -> Done:
        tries.append(event.job_id)
        if event.job_id == "k":
            raise KeyError("no such thing")  # a LookupError
        return Done(job_id=event.job_id, attempt=2**70)  # no Avro long holds it

    group = app.group_id("worker")
    with running(app):
        app.publish(Job(job_id="k", n=1))
        app.publish(Job(job_id="huge", n=2))
        dlq = f"{Job.topic()}.{group}.dlq"
        dead = read_topic(mesh_settings.bootstrap_servers, dlq, 2, partitions=3)

    assert sorted(tries) == ["huge", "k"]  # one try each
    sources = {m.key(): m for m in records(mesh_settings, Job.topic())}
    by_key = {m.key(): m for m in dead}
    for key, error_class in ((b"k", "KeyError"), (b"huge", "mesh.errors.SerializationError")):
        assert_failure_contract(
            by_key[key],
            source=sources[key],
            group=group,
            attempt=1,
            kind="fatal",
            reason="fatal",
            error_class=error_class,
            agent="worker",
        )
    assert records(mesh_settings, Done.topic()) == []
    assert all(records(mesh_settings, topic) == [] for topic in app.topology("worker").retries)


@pytest.fixture
def poison_pills(mesh_settings: Settings) -> Callable[[type[Event]], dict[bytes, bytes]]:
    """Key -> value of one record per kind of undecodable value, for an event type."""

    def make(job: type[Event]) -> dict[bytes, bytes]:
        good = Serde.from_settings(mesh_settings).encode(job(job_id="x", n=7), job.topic())
        return {
            b"garbage": b"{this is not avro}",
            b"wrong-magic": b"\x01" + good[1:],
            b"unknown-schema-id": b"\x00" + (2**31 - 1).to_bytes(4, "big") + good[5:],
            b"truncated": good[:-2],
            b"empty": b"",
        }

    return make


def test_poison_pills_of_each_kind_are_dead_lettered_once_and_good_events_keep_flowing(
    make_app: Callable[..., Mesh],
    mesh_settings: Settings,
    poison_pills: Callable[[type[Event]], dict[bytes, bytes]],
) -> None:
    Job, Done = types()
    app = make_app(Job, Done)

    @app.agent("worker", consumes=Job, retry=RetryPolicy(attempts=3, initial_delay="100ms"))
    async def worker(event: Job, ctx: Context) -> Done:
        return Done(job_id=event.job_id, attempt=ctx.attempt)

    app.prepare()  # registers the schema the pills are cut from
    pills = poison_pills(Job)
    serde = Serde.from_settings(mesh_settings)
    reasons = {}
    for key, value in pills.items():
        with pytest.raises(DeserializationError) as caught:
            serde.decode(value, Job)
        reasons[key] = caught.value.reason
    assert reasons == {
        b"garbage": "bad-magic",
        b"wrong-magic": "bad-magic",
        b"unknown-schema-id": "unknown-schema",
        b"truncated": "truncated",
        b"empty": "empty",
    }
    group = app.group_id("worker")
    dlq = f"{Job.topic()}.{group}.dlq"
    good = [Job(job_id=f"good{n}", n=n) for n in range(10)]
    producer = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
    with running(app):
        # One partition, pills first: the good events sit behind every pill.
        for key, value in pills.items():
            producer.produce(Job.topic(), value, key, partition=0)
        for job in good:
            envelope = Envelope.new_chain(Job.event_type(), produced_by="test")
            value = serde.encode(job, Job.topic())
            producer.produce(
                Job.topic(), value, job.job_id.encode(), partition=0, headers=envelope.to_headers()
            )
        assert producer.flush(10) == 0
        done = read_topic(mesh_settings.bootstrap_servers, Done.topic(), len(good), partitions=3)
        read_topic(mesh_settings.bootstrap_servers, dlq, len(pills), partitions=3)

    assert sorted(m.key() for m in done) == sorted(j.job_id.encode() for j in good)
    dead = records(mesh_settings, dlq)  # the app has stopped: this is everything
    assert sorted(m.key() for m in dead) == sorted(pills)  # each exactly once
    sources = {m.key(): m for m in records(mesh_settings, Job.topic())}
    # An unknown schema id may be a registry replica behind: it gets the policy's tries.
    tried = {b"unknown-schema-id": 3}
    for msg in dead:
        assert_failure_contract(
            msg,
            source=sources[msg.key()],
            group=group,
            attempt=tried.get(msg.key(), 1),
            kind="deserialization",
            reason="deserialization",
            error_class="mesh.errors.DeserializationError",
            agent="worker",
        )
    retried = [
        m.key() for topic in app.topology("worker").retries for m in records(mesh_settings, topic)
    ]
    assert retried == [b"unknown-schema-id"] * 2


def test_a_timed_out_handlers_late_emit_never_appears_downstream(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    Job, Done = types()
    app = make_app(Job, Done)
    late: list[BaseException] = []

    @app.agent("slow", consumes=Job, timeout="200ms", retry=RetryPolicy(attempts=1))
    def slow(event: Job, ctx: Context) -> None:  # sync: its thread cannot be cancelled
        time.sleep(0.6)
        try:
            ctx.emit(Done(job_id=event.job_id, attempt=ctx.attempt))
        except Exception as exc:
            late.append(exc)

    group = app.group_id("slow")
    with running(app):
        app.publish(Job(job_id="late", n=1))
        dlq = f"{Job.topic()}.{group}.dlq"
        [dead] = read_topic(mesh_settings.bootstrap_servers, dlq, 1, partitions=3)
        time.sleep(1.0)  # the handler's thread wakes up and tries to emit

    [source] = records(mesh_settings, Job.topic())
    assert_failure_contract(
        dead,
        source=source,
        group=group,
        attempt=1,
        kind="timeout",
        reason="exhausted",
        error_class="TimeoutError",
        agent="slow",
    )
    assert [type(e).__name__ for e in late] == ["EmitAfterFinishError"]
    probe = Consumer(
        {"bootstrap.servers": mesh_settings.bootstrap_servers, "group.id": unique_name("probe")}
    )
    probe.assign([TopicPartition(Done.topic(), p, OFFSET_BEGINNING) for p in range(3)])
    assert [m for m in probe.consume(100, timeout=2) if m.error() is None] == []
    probe.close()


def test_a_record_carrying_another_apps_failure_headers_fails_into_this_agents_topics(
    make_app: Callable[..., Mesh], mesh_settings: Settings, mesh_admin: AdminClient
) -> None:
    """Destinations and attempts follow from where a record was consumed, not its headers.

    The record looks like a dead letter of another app copied into this agent's source
    topic (as ``mesh replay <dlq> --to-topic`` does), with a forged origin on top.
    """
    Job, Done = types()
    app = make_app(Job, Done)
    tries: list[int] = []

    @app.agent("worker", consumes=Job, retry=RetryPolicy(attempts=2, initial_delay="200ms"))
    async def worker(event: Job, ctx: Context) -> Done:
        tries.append(ctx.attempt)
        raise Flaky("still failing here")

    ghost = unique_name("ghost-topic")
    foreign = [
        (h.ORIGINAL_TOPIC, ghost.encode()),
        (h.ORIGINAL_PARTITION, b"0"),
        (h.ORIGINAL_OFFSET, b"7"),
        (h.ORIGINAL_GROUP, b"other.app"),
        (h.ATTEMPT, b"3"),
        (h.FIRST_FAILURE_TS, b"1600000000000"),
        (h.DLQ_REASON, b"exhausted"),
    ]
    app.prepare()
    serde = Serde.from_settings(mesh_settings)
    envelope = Envelope.new_chain(Job.event_type(), produced_by="test")
    producer = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
    group = app.group_id("worker")
    with running(app):
        producer.produce(
            Job.topic(),
            serde.encode(Job(job_id="copied", n=1), Job.topic()),
            b"copied",
            headers=[*envelope.to_headers(), *foreign],
        )
        assert producer.flush(10) == 0
        [dead] = read_topic(
            mesh_settings.bootstrap_servers, f"{Job.topic()}.{group}.dlq", 1, partitions=3
        )

    assert tries == [1, 2]
    [hop] = records(mesh_settings, f"{Job.topic()}.{group}.retry.200ms")
    for msg in (hop, dead):
        assert header(msg, h.ORIGINAL_TOPIC) == Job.topic()
        assert header(msg, h.ORIGINAL_GROUP) == group
        assert int(header(msg, h.FIRST_FAILURE_TS) or 0) > 1600000000000
        assert header(msg, f"{h.HISTORY_PREFIX}original.topic") == ghost
    assert (header(hop, h.ATTEMPT), header(dead, h.ATTEMPT)) == ("1", "2")
    assert not [t for t in mesh_admin.list_topics(timeout=10).topics if t.startswith(ghost)]


def test_a_handler_raising_cancelled_error_is_retried_then_dead_lettered_like_any_failure(
    make_app: Callable[..., Mesh], mesh_settings: Settings, mesh_admin: AdminClient
) -> None:
    Job, Done = types()
    app = make_app(Job, Done)
    tries: list[tuple[int, int]] = []

    @app.agent("worker", consumes=Job, retry=RetryPolicy(attempts=2, initial_delay="200ms"))
    async def worker(event: Job, ctx: Context) -> Done:
        tries.append((event.n, ctx.attempt))
        if event.n == 1 or (event.n == 3 and ctx.attempt == 1):
            raise asyncio.CancelledError("the model client gave up")
        return Done(job_id=f"{event.job_id}-{event.n}", attempt=ctx.attempt)

    group = app.group_id("worker")
    with running(app):
        app.publish(Job(job_id="k", n=1))  # always cancelled
        app.publish(Job(job_id="k", n=2))  # same key, behind it: its lane must move on
        app.publish(Job(job_id="other", n=3))  # cancelled once, then fine
        done = read_topic(mesh_settings.bootstrap_servers, Done.topic(), 2, partitions=3)
        [dead] = read_topic(
            mesh_settings.bootstrap_servers, f"{Job.topic()}.{group}.dlq", 1, partitions=3
        )
        deadline = time.monotonic() + 10
        while (
            sum(max(0, o) for o in committed_offsets(mesh_admin, group, Job.topic()).values()) < 3
        ):
            assert time.monotonic() < deadline, "the offsets never moved past the cancellation"
            time.sleep(0.2)

    assert sorted(m.key() for m in done) == [b"k-2", b"other-3"]
    assert sorted(tries) == [(1, 1), (1, 2), (2, 1), (3, 1), (3, 2)]
    assert header(dead, h.EXCEPTION_CLASS) == "asyncio.exceptions.CancelledError"
    assert header(dead, h.DLQ_REASON) == "exhausted"


def test_a_schema_id_the_registry_does_not_know_yet_is_retried_not_dead_lettered(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    """A record written with a schema a lagging registry replica has not read yet: the id
    is unknown on the first try and known by the retry."""
    Job, Done = types()
    app = make_app(Job, Done)

    @app.agent("worker", consumes=Job, retry=RetryPolicy(attempts=5, initial_delay="1s"))
    async def worker(event: Job, ctx: Context) -> Done:
        return Done(job_id=event.job_id, attempt=ctx.attempt)

    app.prepare()
    registry = SchemaRegistryClient(mesh_settings.registry_config())
    writer = dict(Job.avro_schema())  # the same layout, told apart by its doc: a new id
    writer["doc"] = f"written by a newer producer {unique_name()}"
    good = Serde.from_settings(mesh_settings).encode(Job(job_id="late", n=1), Job.topic())
    producer = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
    with running(app):
        probe = Schema(json.dumps({"type": "string", "doc": unique_name()}), "AVRO")
        upcoming = registry.register_schema(unique_name("probe") + "-value", probe) + 1
        producer.produce(Job.topic(), b"\x00" + upcoming.to_bytes(4, "big") + good[5:], b"late")
        assert producer.flush(10) == 0
        retry = f"{Job.topic()}.{app.group_id('worker')}.retry.1s"
        read_topic(mesh_settings.bootstrap_servers, retry, 1, partitions=3)  # no such id yet
        newer = Schema(json.dumps(writer), "AVRO")
        assert registry.register_schema(unique_name("newer") + "-value", newer) == upcoming
        [done] = read_topic(mesh_settings.bootstrap_servers, Done.topic(), 1, partitions=3)

    assert done.key() == b"late"
    assert Serde.from_settings(mesh_settings).decode(done.value(), Done).attempt == 2


def test_an_async_handler_past_its_timeout_is_cancelled_retried_and_dead_lettered(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    Job, Done = types()
    app = make_app(Job, Done)
    cancelled: list[int] = []

    @app.agent(
        "slow", consumes=Job, timeout="300ms", retry=RetryPolicy(attempts=2, initial_delay="200ms")
    )
    async def slow(event: Job, ctx: Context) -> Done:
        if event.n == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(ctx.attempt)
                raise
        return Done(job_id=event.job_id, attempt=ctx.attempt)

    group = app.group_id("slow")
    with running(app):
        app.publish(Job(job_id="stuck", n=1))
        app.publish(Job(job_id="fine", n=2))
        [done] = read_topic(mesh_settings.bootstrap_servers, Done.topic(), 1, partitions=3)
        [dead] = read_topic(
            mesh_settings.bootstrap_servers, f"{Job.topic()}.{group}.dlq", 1, partitions=3
        )

    assert done.key() == b"fine"
    assert cancelled == [1, 2]
    assert header(dead, h.ERROR_KIND) == "timeout"
    assert header(dead, h.EXCEPTION_CLASS) == "TimeoutError"
    assert header(dead, h.EXCEPTION_MESSAGE) == "handler took over 0.3s"
    assert header(dead, h.ATTEMPT) == "2"
