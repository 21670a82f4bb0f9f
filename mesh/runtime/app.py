"""``Mesh``: declare agents with a decorator, run them, publish from anywhere.

Nothing connects to Kafka or the registry at import or decoration time; resources are
built on first use (``publish``) or when the app starts serving.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from mesh.config import RetryPolicy, Settings, load_settings, parse_duration, parse_timeout
from mesh.envelope import Envelope
from mesh.errors import ConfigError
from mesh.event import Event
from mesh.kafka.clients import admin_config, agent_consumer_config
from mesh.kafka.topics import TopicSpec, ensure_topics, existing_topics, retention_config
from mesh.runtime.delay import Delayed, delay_topic_specs, deliver_at_ms
from mesh.runtime.dispatcher import WorkerOptions
from mesh.runtime.forwarder import DelayForwarder
from mesh.runtime.invoke import with_context
from mesh.runtime.metrics import Metrics
from mesh.runtime.middleware import Hooks, LogBinding, Measure, Middleware, Trace
from mesh.runtime.publisher import Publisher
from mesh.runtime.threads import HandlerThreads
from mesh.runtime.topology import Topology
from mesh.runtime.tracing import EventTracer, event_tracer
from mesh.runtime.worker import AgentWorker
from mesh.schema.files import verify_schema
from mesh.serde import Serde

__all__ = ["AgentSpec", "Mesh"]

log = logging.getLogger(__name__)

#: How often a running app checks that its delay forwarder is alive.
_CHECK_S = 1.0


@dataclass(frozen=True)
class AgentSpec:
    """An agent as declared: what it consumes and emits, and its decorator overrides."""

    name: str
    handler: Callable[..., Any]
    consumes: tuple[type[Event], ...]
    emits: tuple[type[Event], ...]
    concurrency: int | None = None
    timeout_s: float | None = None  # None: mesh.toml decides; 0: no limit
    group_id: str | None = None
    retry: RetryPolicy | None = None
    batch_size: int | None = None
    batch_wait_s: float | None = None
    #: The handler takes a list of events: a batch agent.
    batch: bool = False


class Mesh:
    """An application: a named set of agents sharing settings, a producer and a registry.

    ::

        app = Mesh("research")

        @app.agent("planner", consumes=TaskCreated)
        async def planner(event: TaskCreated, ctx: Context) -> PlanReady | None: ...
    """

    def __init__(
        self,
        name: str,
        *,
        settings: Settings | None = None,
        schemas_dir: str | Path = "schemas",
        middleware: Sequence[Middleware] = (),
    ) -> None:
        self.name = name
        self.schemas_dir = Path(schemas_dir)
        self._settings = settings
        self._middleware = list(middleware)
        self._agents: dict[str, AgentSpec] = {}
        self._publisher: Publisher | None = None
        self._serde: Serde | None = None

    # -- declaration -----------------------------------------------------------------

    def agent(
        self,
        name: str | None = None,
        *,
        consumes: type[Event] | Sequence[type[Event]],
        emits: type[Event] | Sequence[type[Event]] = (),
        concurrency: int | None = None,
        timeout: str | float | None = None,
        group_id: str | None = None,
        retry: RetryPolicy | None = None,
        batch_size: int | None = None,
        batch_wait: str | float | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a handler as an agent.

        The handler takes ``(event)`` or ``(event, ctx)``, may be sync (run in a thread
        pool) or async, and may return an event, a list of events or ``None``. Emitted
        types are read from its return annotation, plus *emits*. Options given here win
        over ``[agents.NAME]`` in ``mesh.toml``. A handler that raises (or exceeds
        *timeout*: 5 minutes unless ``mesh.toml`` says otherwise, ``"off"`` for none) is
        retried through retry topics as *retry* says, then dead-lettered.

        A handler whose first parameter is annotated ``list[EventType]`` is a batch
        agent: it gets up to *batch_size* events (500 by default), gathered for at most
        *batch_wait* (50 ms), and returns a list with one result per event (an event, a
        list of events, or None). When a batch raises, its halves are handled again, down
        to single events, so only the events that fail are retried or dead-lettered.
        """
        consumed = _as_tuple(consumes)
        for event_type in consumed:
            _require_event_type(event_type, "consumes")

        def register(handler: Callable[..., Any]) -> Callable[..., Any]:
            agent_name = name or handler.__name__
            if agent_name in self._agents:
                raise ConfigError(f"app {self.name!r} already has an agent named {agent_name!r}")
            self._agents[agent_name] = AgentSpec(
                name=agent_name,
                handler=handler,
                consumes=consumed,
                emits=tuple(dict.fromkeys(_as_tuple(emits) + _returned_event_types(handler))),
                concurrency=concurrency,
                timeout_s=None if timeout is None else parse_timeout(timeout) or 0.0,
                group_id=group_id,
                retry=retry,
                batch_size=batch_size,
                batch_wait_s=None if batch_wait is None else parse_duration(batch_wait),
                batch=_takes_list(handler),
            )
            return handler

        return register

    def add_middleware(self, middleware: Middleware) -> None:
        """Add *middleware* to every agent of the app (after those added before)."""
        self._middleware.append(middleware)

    @property
    def agents(self) -> dict[str, AgentSpec]:
        return dict(self._agents)

    @property
    def event_types(self) -> dict[str, type[Event]]:
        """Every event type the agents consume or emit, by event type name."""
        found: dict[str, type[Event]] = {}
        for spec in self._agents.values():
            for event_type in spec.consumes + spec.emits:
                found[event_type.event_type()] = event_type
        return found

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings()
        if self._settings.delay_namespace is None:  # delay topics of its own: runtime.delay
            self._settings = self._settings.model_copy(update={"delay_namespace": self.name})
        return self._settings

    @settings.setter
    def settings(self, settings: Settings) -> None:
        self._settings = settings

    def describe(self) -> dict[str, dict[str, Any]]:
        """The effective policy of every agent, as plain data (``mesh config show --app``)."""
        described = {}
        for name, spec in self._agents.items():
            options = self._options(spec)
            topology = options.topology
            described[name] = {
                "group_id": topology.group_id,
                "consumes": [t.event_type() for t in spec.consumes],
                "emits": [t.event_type() for t in spec.emits],
                "concurrency": options.concurrency,
                "timeout_s": options.timeout_s,
                "batch_size": options.batch_size if options.batch else None,
                "retry": options.retry.model_dump(mode="json"),
                "retry_topics": sorted(topology.retries),
                "dead_letter_topics": sorted(topology.dead_letters),
            }
        return described

    def group_id(self, agent: str) -> str:
        spec = self._agents[agent]
        return spec.group_id or self.settings.agent(agent).group_id or f"{self.name}.{agent}"

    def retry_policy(self, agent: str) -> RetryPolicy:
        """The effective retry policy of *agent*: the decorator's, else ``mesh.toml``'s."""
        return self._agents[agent].retry or self.settings.agent(agent).retry

    def timeout_s(self, agent: str) -> float | None:
        """The effective handler time limit of *agent* (None: no limit): the decorator's,
        else ``mesh.toml``'s (5 minutes by default)."""
        spec = self._agents[agent]
        if spec.timeout_s is None:
            return self.settings.agent(agent).timeout
        return spec.timeout_s or None  # 0: turned off in the decorator

    def topology(self, agent: str) -> Topology:
        """Every topic *agent* reads and writes its failures to."""
        return Topology.of(
            agent,
            self.group_id(agent),
            self._agents[agent].consumes,
            self.retry_policy(agent).delays_ms(),
        )

    # -- publishing ------------------------------------------------------------------

    def publish(
        self,
        event: Event,
        *,
        correlation_id: str | None = None,
        deliver_at: datetime | int | None = None,
    ) -> Envelope:
        """Publish *event* as the start of a chain and wait for the broker's acknowledgement.

        With *deliver_at* (a timezone-aware datetime, or epoch milliseconds) the event
        waits in a delay topic and reaches its topic no earlier than that; a ``mesh run``
        process must be running to forward it.
        """
        envelope = Envelope.new_chain(
            event.event_type(), produced_by=self.name, correlation_id=correlation_id
        )
        self._get_publisher().publish(_delayed(event, deliver_at), envelope)
        return envelope

    async def apublish(
        self,
        event: Event,
        *,
        correlation_id: str | None = None,
        deliver_at: datetime | int | None = None,
    ) -> Envelope:
        """Like :meth:`publish`, without blocking the event loop."""
        envelope = Envelope.new_chain(
            event.event_type(), produced_by=self.name, correlation_id=correlation_id
        )
        await self._get_publisher().apublish(_delayed(event, deliver_at), envelope)
        return envelope

    def _get_serde(self) -> Serde:
        if self._serde is None:
            self._serde = Serde.from_settings(self.settings)
        return self._serde

    def _get_publisher(self) -> Publisher:
        if self._publisher is None:
            self._publisher = Publisher(self.settings, self._get_serde())
        return self._publisher

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush what is still queued for sending."""
        if self._publisher is not None:
            self._publisher.flush(timeout_s)

    # -- running ---------------------------------------------------------------------

    def run(self, agents: Sequence[str] | None = None, *, metrics: Metrics | None = None) -> None:
        """Run the agents (all by default) until SIGTERM or SIGINT; blocking."""
        asyncio.run(self.serve(agents, handle_signals=True, metrics=metrics))

    async def serve(
        self,
        agents: Sequence[str] | None = None,
        *,
        stop: asyncio.Event | None = None,
        handle_signals: bool = False,
        consumer_config: dict[str, Any] | None = None,
        ready: Callable[[], None] | None = None,
        metrics: Metrics | None = None,
        tracer_provider: Any = None,
    ) -> None:
        """Run the agents until *stop* is set (or a signal arrives when *handle_signals*).

        The workers record into *metrics* (see :func:`mesh.runtime.status.observed`); with
        ``settings.tracing`` they start spans from *tracer_provider* (the global one by
        default).
        """
        specs = self._select(agents)
        self.prepare(specs)
        metrics = metrics or Metrics()
        tracer = event_tracer(self.settings.tracing, tracer_provider)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
        publisher = self._get_publisher()
        concurrency = max(self._options(spec).concurrency for spec in specs)
        threads = HandlerThreads(min(64, concurrency))
        metrics.watch_threads(threads)
        workers = []
        for spec in specs:
            agent_metrics = metrics.agent(spec.name)
            options = self._options(spec, self._hooks(spec, agent_metrics, tracer))
            config = agent_consumer_config(
                self.settings, group_id=options.group_id, overrides=consumer_config
            )
            workers.append(
                AgentWorker(
                    options,
                    consumer_config=config,
                    publisher=publisher,
                    serde=self._get_serde(),
                    threads=threads,
                    metrics=agent_metrics,
                )
            )
        forwarder = DelayForwarder(self.settings, consumer_config=consumer_config)
        publisher.pump_acks(loop)
        for worker in workers:
            worker.start()
        forwarder.start()
        log.info("app %s: running %s", self.name, ", ".join(spec.name for spec in specs))
        if ready is not None:
            ready()
        waits = {asyncio.ensure_future(e.wait()) for e in (stop, *(w.stopping for w in workers))}
        try:
            while forwarder.failed is None:
                done, _ = await asyncio.wait(waits, timeout=_CHECK_S, return_when="FIRST_COMPLETED")
                if done:
                    break
        finally:
            for wait in waits:
                wait.cancel()
            await asyncio.gather(
                *(worker.stop() for worker in workers), loop.run_in_executor(None, forwarder.stop)
            )
            publisher.pump_acks(None)
            publisher.flush()
            threads.close()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        failed = [w.failed for w in workers if w.failed is not None]
        if forwarder.failed is not None:
            failed.append(forwarder.failed)
        if failed:
            raise failed[0]

    def prepare(self, specs: Iterable[AgentSpec] | None = None) -> None:
        """Check schemas against ``schemas/`` and create the topics the agents need."""
        specs = list(self._agents.values() if specs is None else specs)
        types_needed = {t for spec in specs for t in spec.consumes + spec.emits}
        for event_type in sorted(types_needed, key=lambda t: t.event_type()):
            verify_schema(event_type, self.schemas_dir)
        # Through the publisher: it then knows these topics exist and skips the check
        # on the first send.
        self._get_publisher().ensure_topics(types_needed)
        topics = self.settings.topics
        admin = AdminClient(admin_config(self.settings))
        sizes = existing_topics(admin)
        failures = []
        for spec in specs:
            topology = self.topology(spec.name)
            # Dead letters wait for a person: forever unless the agent says otherwise.
            kept = retention_config(self.settings.agent(spec.name).dead_letter_retention)
            # Retries must outlive their delay: keep them a week, or 10x the longest delay.
            longest_ms = max(self.retry_policy(spec.name).delays_ms(), default=0)
            retention = {"retention.ms": str(max(7 * 86_400_000, 10 * longest_ms))}
            for topics_of, config in ((topology.dead_letters, kept), (topology.retries, retention)):
                failures.extend(
                    TopicSpec(
                        name,
                        sizes.get(source, topics.partitions),
                        topics.replication_factor,
                        config,
                    )
                    for name, source in topics_of.items()
                )
        ensure_topics(admin, [*failures, *delay_topic_specs(self.settings)])
        # Register what the agents write now: an incompatible schema or an unreachable
        # registry fails the start, not the first emit.
        serde = self._get_serde()
        for spec in specs:
            for event_type in spec.emits:
                serde.register(event_type, event_type.topic())

    def _select(self, agents: Sequence[str] | None) -> list[AgentSpec]:
        if not self._agents:
            raise ConfigError(f"app {self.name!r} has no agents")
        if not agents:
            return list(self._agents.values())
        unknown = [a for a in agents if a not in self._agents]
        if unknown:
            raise ConfigError(
                f"app {self.name!r} has no agent {', '.join(map(repr, unknown))}; "
                f"its agents are: {', '.join(self._agents)}"
            )
        return [self._agents[a] for a in agents]

    def _options(self, spec: AgentSpec, hooks: Hooks | None = None) -> WorkerOptions:
        configured = self.settings.agent(spec.name)
        batch_size = spec.batch_size or configured.batch_size
        concurrency = spec.concurrency
        if concurrency is None and spec.batch and "concurrency" not in configured.model_fields_set:
            concurrency = batch_size  # one batch at a time unless told otherwise
        return WorkerOptions(
            topology=self.topology(spec.name),
            handler=spec.handler if spec.batch else with_context(spec.handler),
            is_async=inspect.iscoroutinefunction(spec.handler),
            concurrency=concurrency or configured.concurrency,
            timeout_s=self.timeout_s(spec.name),
            retry=self.retry_policy(spec.name),
            max_uncommitted=configured.max_uncommitted,
            batch=spec.batch,
            batch_size=batch_size,
            batch_wait_s=spec.batch_wait_s or configured.batch_wait,
            hooks=hooks or Hooks(()),
        )

    def _hooks(self, spec: AgentSpec, metrics: Any, tracer: EventTracer | None) -> Hooks:
        """The middleware of *spec*: mesh's own (log binding, tracing, metrics), then the app's.

        A batch agent's handler runs once for many events: binding one event's ids to its
        log lines would mislead.
        """
        topology = self.topology(spec.name)
        middleware: list[Middleware] = [] if spec.batch else [LogBinding()]
        if tracer is not None:
            middleware.append(Trace(tracer, topology))
        middleware.append(Measure(metrics, topology))
        return Hooks([*middleware, *self._middleware])


def _delayed(event: Event, deliver_at: datetime | int | None) -> Event | Delayed:
    return event if deliver_at is None else Delayed(event, deliver_at_ms(deliver_at))


def _as_tuple(value: type[Event] | Sequence[type[Event]]) -> tuple[type[Event], ...]:
    return (value,) if isinstance(value, type) else tuple(value)


def _require_event_type(value: object, where: str) -> None:
    if not (isinstance(value, type) and issubclass(value, Event)):
        raise ConfigError(f"{where}={value!r} is not an event type (a subclass of mesh.Event)")


def _takes_list(handler: Callable[..., Any]) -> bool:
    """Whether the first parameter of *handler* is annotated ``list[...]``."""
    params = list(inspect.signature(handler).parameters.values())
    if not params:
        return False
    hint = params[0].annotation
    if isinstance(hint, str):  # postponed: types defined in a function do not resolve
        return hint.replace(" ", "").startswith(("list[", "typing.List[", "List["))
    return typing.get_origin(hint) is list


def _returned_event_types(handler: Callable[..., Any]) -> tuple[type[Event], ...]:
    """Event types named in the handler's return annotation (``A | list[B] | None``)."""
    try:
        hint = typing.get_type_hints(handler).get("return")
    except Exception:  # unresolvable forward references: rely on ``emits=``
        return ()
    found: list[type[Event]] = []

    def walk(tp: Any) -> None:
        if isinstance(tp, type) and issubclass(tp, Event):
            found.append(tp)
        elif isinstance(tp, types.UnionType) or typing.get_origin(tp) is not None:
            for arg in typing.get_args(tp):
                walk(arg)

    walk(hint)
    return tuple(found)
