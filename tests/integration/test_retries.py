"""Retries through delay topics, timeouts and dead letters, against the real broker."""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Producer

from mesh import Context, Event, Mesh, Settings
from mesh.config import RetryPolicy
from mesh.runtime.retry import RETRY_DUE_AT
from mesh.testing import unique_name
from tests.integration.conftest import header, read_topic, running


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
            retried[event.job_id] = (int(ctx.headers[RETRY_DUE_AT]) / 1000, time.time())
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

    with running(app):
        root = app.publish(Job(job_id="doomed", n=1))
        app.publish(Job(job_id="fine", n=2))
        dlq = f"{Job.topic()}.{app.group_id('worker')}.dlq"
        [dead] = read_topic(mesh_settings.bootstrap_servers, dlq, 1, partitions=3)
        [ok] = read_topic(mesh_settings.bootstrap_servers, Done.topic(), 1, partitions=3)

    assert tries == [1, 2, 3]
    assert ok.key() == b"fine"
    assert dead.key() == b"doomed"
    assert header(dead, "mesh.dlq.attempts") == "3"
    assert header(dead, "mesh.dlq.error-kind") == "handler"
    assert header(dead, "mesh.dlq.error-class") == f"{__name__}.Flaky"
    assert header(dead, "mesh.dlq.error-message") == "never works"
    assert header(dead, "mesh.dlq.original-topic") == Job.topic()
    assert header(dead, "mesh.dlq.original-offset") == "0"
    assert header(dead, "mesh.dlq.agent") == "worker"
    assert header(dead, "mesh.correlation-id") == root.correlation_id
    assert header(dead, "mesh.event-id") == root.event_id
    assert header(dead, "mesh.retry.attempt") is None  # retry bookkeeping is dropped


def test_non_retryable_errors_and_poison_pills_skip_retries(
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
        raise KeyError("no such thing")  # a LookupError

    with running(app):
        app.publish(Job(job_id="k", n=1))
        producer = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
        producer.produce(Job.topic(), b"\x00\x00\x00\x00\x63garbage", b"pill")
        producer.flush(10)
        dlq = f"{Job.topic()}.{app.group_id('worker')}.dlq"
        dead = read_topic(mesh_settings.bootstrap_servers, dlq, 2, partitions=3)

    assert tries == ["k"]
    by_key = {m.key(): m for m in dead}
    assert header(by_key[b"k"], "mesh.dlq.attempts") == "1"
    assert header(by_key[b"pill"], "mesh.dlq.error-kind") == "deserialization"


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

    with running(app):
        app.publish(Job(job_id="late", n=1))
        dlq = f"{Job.topic()}.{app.group_id('slow')}.dlq"
        [dead] = read_topic(mesh_settings.bootstrap_servers, dlq, 1, partitions=3)
        time.sleep(1.0)  # the handler's thread wakes up and tries to emit

    assert header(dead, "mesh.dlq.error-kind") == "timeout"
    assert [type(e).__name__ for e in late] == ["EmitAfterFinishError"]
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": mesh_settings.bootstrap_servers, "group.id": "x"})
    probe.assign([TopicPartition(Done.topic(), p, OFFSET_BEGINNING) for p in range(3)])
    assert [m for m in probe.consume(100, timeout=2) if m.error() is None] == []
    probe.close()
