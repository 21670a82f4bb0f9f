"""pytest plugin: real Kafka and a real schema registry for tests (loaded automatically).

Where the broker comes from, in order:

1. ``MESH_BOOTSTRAP_SERVERS`` is set: that cluster is used as it is;
2. ``MESH_TEST_BROKER=docker``: Apache Kafka in a container (the official image, KRaft,
   ``MESH_TEST_KAFKA_IMAGE`` to pick another), through testcontainers;
3. otherwise the embedded Tansu broker, started for the session on a free port.

The registry is ``MESH_REGISTRY_URL`` when set, otherwise a ``mesh registry serve``
process on the session's broker. Topic names are unique per test, so tests never
share state even on a shared cluster.

The kit for testing an app's agents (``pip install 'mesh-agents[test]'``):

- ``mesh_run`` (fixture): ``with mesh_run(app) as running:`` serves *app* in this
  process on the session's broker and registry, with group settings that make it take
  its partitions in seconds; ``running.publish(event)`` sends an event as a client
  would, ``running.expect(EventType, where=..., timeout=...)`` waits for one the agents
  emit (like Spring's ``KafkaTestUtils.getSingleRecord``, on the real broker rather
  than FastStream's in-memory ``TestKafkaBroker``);
- :func:`call_agent`: one handler called with one event, no broker: what it emitted and
  what the runtime would do next (done, retry, dead letter).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
from confluent_kafka import Consumer, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from mesh.config import Settings
from mesh.dev.stack import free_port, start_broker, start_registry
from mesh.envelope import Envelope
from mesh.event import Event
from mesh.headers import EVENT_TYPE, last
from mesh.kafka.clients import admin_config, reader_config
from mesh.kafka.compat import end_offsets
from mesh.kafka.topics import TopicSpec, ensure_topics, existing_topics
from mesh.runtime.app import Mesh
from mesh.runtime.context import Context
from mesh.runtime.delay import Delayed
from mesh.runtime.failure import DeadLetterReason, ErrorKind
from mesh.runtime.invoke import invoke, with_context
from mesh.runtime.retry import DeadLetter, decide
from mesh.runtime.threads import HandlerThreads

__all__ = [
    "FAST_GROUP_CONFIG",
    "HandlerOutcome",
    "RunningApp",
    "call_agent",
    "run_app",
    "unique_name",
]

E = TypeVar("E", bound=Event)

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


# -- the kit for testing an app's agents ------------------------------------------------


@contextmanager
def run_app(
    app: Mesh,
    agents: Sequence[str] | None = None,
    *,
    consumer_config: dict[str, Any] | None = None,
    **options: Any,
) -> Iterator[None]:
    """Serve *app* in a thread for the duration of the block, then stop it gracefully.

    Its consumers use *consumer_config* (default :data:`FAST_GROUP_CONFIG`); an error
    that stops the app is raised here, at the start or at the end of the block.
    """
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    started = threading.Event()
    errors: list[BaseException] = []
    config = FAST_GROUP_CONFIG if consumer_config is None else consumer_config

    async def main() -> None:
        nonlocal stop, loop
        stop, loop = asyncio.Event(), asyncio.get_running_loop()
        await app.serve(agents, stop=stop, consumer_config=config, ready=started.set, **options)

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            errors.append(exc)
            started.set()

    thread = threading.Thread(target=target, name=f"mesh-test-{app.name}", daemon=True)
    thread.start()
    assert started.wait(60), f"app {app.name} did not start within 60 s"
    if errors:
        raise errors[0]
    try:
        yield
    finally:
        assert loop is not None
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(60)
        assert not thread.is_alive(), f"app {app.name} did not stop within 60 s"
    if errors:
        raise errors[0]


class RunningApp:
    """An app served for a test: publish events into it, expect the events it emits.

    :meth:`expect` sees what reached the app's topics after the app started (earlier
    tests' events are not confused with this one's), each event once.
    """

    def __init__(self, app: Mesh) -> None:
        self.app = app
        self._consumer = Consumer(reader_config(app.settings, "test"))
        self._seen: list[Message] = []
        self._taken: set[tuple[str, int, int]] = set()
        self._types = app.event_types

    def _start(self) -> None:
        """Read every topic of the app from where it ends now (call after ``prepare``)."""
        settings = self.app.settings
        counts = existing_topics(AdminClient(admin_config(settings)))
        tps = [
            (topic, p)
            for topic in {t.topic() for t in self._types.values()}
            for p in range(counts.get(topic, 0))
        ]
        ends = end_offsets(settings, self._consumer, tps)
        self._consumer.assign([TopicPartition(t, p, ends[(t, p)]) for t, p in tps])

    def publish(self, event: Event, *, correlation_id: str | None = None) -> Envelope:
        """Send *event* as the first of a chain, acknowledged; its envelope holds its ids."""
        return self.app.publish(event, correlation_id=correlation_id)

    def expect(
        self,
        event_type: type[E],
        *,
        where: Callable[[E], bool] | None = None,
        timeout: float = 30.0,
    ) -> E:
        """The first *event_type* emitted since the app started that *where* accepts.

        Fails the test (AssertionError) after *timeout* seconds without one, listing
        what did arrive.
        """
        if event_type.event_type() not in self._types:
            raise AssertionError(
                f"{event_type.__name__} is not an event type of app {self.app.name!r}: "
                f"it knows {', '.join(sorted(self._types))}"
            )
        deadline = time.monotonic() + timeout
        checked = 0
        while True:
            while checked < len(self._seen):
                msg = self._seen[checked]
                checked += 1
                found = self._match(msg, event_type, where)
                if found is not None:
                    return found
            if time.monotonic() >= deadline:
                break
            batch = self._consumer.consume(500, timeout=min(0.2, deadline - time.monotonic()))
            self._seen.extend(m for m in batch if m.error() is None)
        arrived = [(last(m.headers(), EVENT_TYPE) or b"?").decode() for m in self._seen]
        raise AssertionError(
            f"no {event_type.__name__}{' matching where=' if where else ''} within "
            f"{timeout:g} s; arrived since the app started: {', '.join(arrived) or 'nothing'}"
        )

    def _match(
        self, msg: Message, event_type: type[E], where: Callable[[E], bool] | None
    ) -> E | None:
        place = (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        if place in self._taken or msg.topic() != event_type.topic():
            return None
        if last(msg.headers(), EVENT_TYPE) != event_type.event_type().encode():
            return None
        event = self.app._get_serde().decode(msg.value(), event_type)
        if where is not None and not where(event):
            return None
        self._taken.add(place)
        return event

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture
def mesh_run(
    mesh_settings: Settings,
) -> Callable[..., AbstractContextManager[RunningApp]]:
    """Factory: ``with mesh_run(app, agents=None) as running:`` serves *app* for the block.

    The app keeps its own settings (``mesh.toml``: retry policies, ...) but talks to the
    session's broker and registry; its topics are created and its schemas checked first.
    """

    @contextmanager
    def serve(app: Mesh, agents: Sequence[str] | None = None) -> Iterator[RunningApp]:
        # The app's clients are built for its settings: set aside, restored afterwards.
        saved = app._settings, app._publisher, app._serde
        app._settings = app.settings.model_copy(
            update={
                "bootstrap_servers": mesh_settings.bootstrap_servers,
                "registry_url": mesh_settings.registry_url,
                "broker": mesh_settings.broker,
            }
        )
        app._publisher = app._serde = None
        running = RunningApp(app)
        try:
            app.prepare([app.agents[a] for a in agents] if agents else None)
            running._start()
            with run_app(app, agents):
                yield running
        finally:
            running.close()
            app.close()
            app._settings, app._publisher, app._serde = saved

    return serve


@dataclass(frozen=True)
class HandlerOutcome:
    """What one call of a handler produced, and what the runtime would do next.

    ``decision``: ``done`` (its emits are sent, the event is finished), ``retry`` (sent to
    a retry topic, due in ``retry_in_s``) or ``dead_letter`` (for ``reason``).
    """

    decision: Literal["done", "retry", "dead_letter"]
    emitted: list[Event] = field(default_factory=list)
    error: BaseException | None = None
    reason: DeadLetterReason | None = None
    retry_in_s: float | None = None


def call_agent(
    app: Mesh,
    agent: str,
    event: Event,
    *,
    attempt: int = 1,
    correlation_id: str | None = None,
) -> HandlerOutcome:
    """Call *agent*'s handler of *app* with *event*, as the runtime would, without a broker.

    The handler gets a real context (``ctx.emit``, ``ctx.log``, ``ctx.attempt`` =
    *attempt*) and the agent's timeout; the decision follows the agent's effective
    retry policy (decorator, then ``mesh.toml``) exactly as the worker applies it.
    """
    if agent not in app.agents:
        known = ", ".join(app.agents) or "none"
        raise ValueError(f"app {app.name!r} has no agent {agent!r}; its agents are: {known}")
    spec = app.agents[agent]
    envelope = Envelope.new_chain(event.event_type(), "test", correlation_id=correlation_id)
    ctx = Context(
        agent=agent,
        envelope=envelope,
        topic=event.topic(),
        partition=0,
        offset=0,
        key=None,
        raw_headers=list(envelope.to_headers()),
        attempt=attempt,
    )
    threads = HandlerThreads(1)
    try:
        result = asyncio.run(
            invoke(
                with_context(spec.handler),
                event,
                ctx,
                is_async=asyncio.iscoroutinefunction(spec.handler),
                timeout_s=app.timeout_s(agent),
                threads=threads,
            )
        )
    except Exception as exc:
        ctx._finish()
        return _failed(app, agent, exc, attempt)
    finally:
        threads.close()
    emits: list[Any] = ctx._finish()
    if result is not None:
        emits.extend(result if isinstance(result, list | tuple) else [result])
    return HandlerOutcome("done", emitted=[e.event if isinstance(e, Delayed) else e for e in emits])


def _failed(app: Mesh, agent: str, error: Exception, attempt: int) -> HandlerOutcome:
    """The worker's decision for a failed attempt (:func:`mesh.runtime.retry.decide`), as
    if every earlier attempt had failed too and each retry had run when due."""
    policy = app.retry_policy(agent)
    kind = ErrorKind.TIMEOUT if isinstance(error, TimeoutError) else ErrorKind.TRANSIENT
    earlier_ms = sum(policy.delay_ms(n) for n in range(1, attempt))
    decision = decide(
        policy, error, kind, attempt, now_ms=earlier_ms, first_failure_ms=0, jitter=False
    )
    if isinstance(decision, DeadLetter):
        return HandlerOutcome("dead_letter", error=error, reason=decision.reason)
    return HandlerOutcome("retry", error=error, retry_in_s=decision.delay_ms / 1000)
