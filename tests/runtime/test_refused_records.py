"""Records the broker refuses for good: dead-lettered with the reason, never a crash loop.

librdkafka refuses a record over ``message.max.bytes`` before sending it (on a real
cluster a topic's ``max.message.bytes``, a missing ACL or a deleted topic are refused by
the broker the same way, in the delivery report). Retrying the same record cannot help.
"""

from __future__ import annotations

from collections.abc import Callable

from confluent_kafka import Producer

from mesh import Context, Event, Mesh, Settings
from mesh import headers as h
from mesh.testing import unique_name
from tests.support import header, read_topic, running


def types() -> tuple[type[Event], type[Event]]:
    stem = unique_name("refused")

    class Job(Event, topic=f"{stem}.jobs", key="job_id", name="test.SizedJob"):
        job_id: str
        size: int

    class Done(Event, topic=f"{stem}.done", key="job_id", name="test.SizedDone"):
        job_id: str
        text: str

    return Job, Done


def test_an_output_refused_for_good_dead_letters_its_input_and_the_agent_goes_on(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    Job, Done = types()
    app = make_app(Job, Done)

    @app.agent("writer", consumes=Job)
    async def writer(event: Job, ctx: Context) -> Done:
        return Done(job_id=event.job_id, text="x" * event.size)

    group = app.group_id("writer")
    with running(app):
        app.publish(Job(job_id="huge", size=2_000_000))  # its output: over 1 MB
        app.publish(Job(job_id="fine", size=10))
        [dead] = read_topic(
            mesh_settings.bootstrap_servers, f"{Job.topic()}.{group}.dlq", 1, partitions=3
        )
        [done] = read_topic(mesh_settings.bootstrap_servers, Done.topic(), 1, partitions=3)

    assert done.key() == b"fine"
    assert dead.key() == b"huge"
    assert header(dead, h.DLQ_REASON) == "refused"
    assert header(dead, h.ERROR_KIND) == "fatal"
    assert header(dead, h.EXCEPTION_CLASS) == "mesh.errors.PublishError"
    assert "MSG_SIZE_TOO_LARGE" in (header(dead, h.EXCEPTION_MESSAGE) or "")
    assert dead.value()  # the input itself is small: kept byte for byte


def test_an_input_too_large_to_dead_letter_is_kept_without_its_value(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    """A 1.02 MB undecodable value plus the failure headers is over 1 MB: it used to
    crash the worker on every restart."""
    Job, Done = types()
    app = make_app(Job, Done)

    @app.agent("writer", consumes=Job)
    async def writer(event: Job, ctx: Context) -> Done:
        return Done(job_id=event.job_id, text="ok")

    app.prepare()
    group = app.group_id("writer")
    size = 1_020_000
    producer = Producer(
        {"bootstrap.servers": mesh_settings.bootstrap_servers, "message.max.bytes": 2_000_000}
    )
    with running(app):
        producer.produce(Job.topic(), b"\xff" * size, b"poison", partition=0)
        assert producer.flush(10) == 0
        app.publish(Job(job_id="fine", size=0))
        [dead] = read_topic(
            mesh_settings.bootstrap_servers, f"{Job.topic()}.{group}.dlq", 1, partitions=3
        )
        [done] = read_topic(mesh_settings.bootstrap_servers, Done.topic(), 1, partitions=3)

    assert done.key() == b"fine"
    assert dead.key() == b"poison"
    assert dead.value() is None
    assert header(dead, h.DLQ_VALUE_BYTES) == str(size)
    assert header(dead, h.DLQ_REASON) == "deserialization"
    assert header(dead, h.ORIGINAL_TOPIC) == Job.topic()
