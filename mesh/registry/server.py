"""Wiring and lifecycle of ``mesh registry serve``, in one explicit place.

Start-up order matters: the topic exists, the reader has caught up (so the first answer
is already complete), then the port opens (so ``GET /`` answering 200 means ready), then
the registry joins the primary election (writes wait for it; reads do not).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from confluent_kafka.admin import AdminClient
from prometheus_client.exposition import choose_encoder

from mesh.errors import RegistryServerError
from mesh.kafka.topics import TopicSpec, ensure_topics, existing_topics
from mesh.registry.api import Api
from mesh.registry.election import Election
from mesh.registry.forward import Forwarder
from mesh.registry.metrics import RegistryMetrics
from mesh.registry.reader import Reader
from mesh.registry.service import Registry
from mesh.registry.store import Store
from mesh.registry.writer import Writer

__all__ = ["RegistryConfig", "run", "serve"]

log = logging.getLogger(__name__)

#: Request bodies above this are refused (413) before parsing.
_MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, kw_only=True)
class RegistryConfig:
    """How to run a registry. ``kafka`` and ``basic_auth`` may hold secrets: never logged."""

    kafka: Mapping[str, Any] = field(repr=False)
    #: Reader properties for a broker that needs them (:func:`mesh.kafka.compat.tuning`).
    reader_tuning: Mapping[str, Any] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = 8081
    topic: str = "_schemas"
    advertised_url: str | None = None
    basic_auth: str | None = field(default=None, repr=False)
    election_session_timeout_ms: int = 6000
    write_timeout_s: float = 15.0
    startup_timeout_s: float = 60.0

    @property
    def url(self) -> str:
        """Where other registries reach this one: ``advertised_url`` or derived from the bind."""
        if self.advertised_url:
            return self.advertised_url.rstrip("/")
        host = socket.getfqdn() if self.host in ("", "0.0.0.0", "::") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"


def run(config: RegistryConfig) -> None:
    """Serve until SIGINT or SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(config, stop=stop)

    asyncio.run(main())


async def serve(config: RegistryConfig, *, stop: asyncio.Event) -> None:
    """Run a registry until *stop* is set."""
    await asyncio.to_thread(_ensure_topic, config)
    store = Store()
    reader = Reader(
        kafka=config.kafka, topic=config.topic, store=store, tuning=config.reader_tuning
    )
    writer = Writer(kafka=config.kafka, topic=config.topic, timeout_s=config.write_timeout_s)
    election = Election(
        kafka=config.kafka,
        topic=config.topic,
        url=config.url,
        store=store,
        reader=reader,
        writer=writer,
        session_timeout_ms=config.election_session_timeout_ms,
        write_timeout_s=config.write_timeout_s,
    )
    registry = Registry(
        store=store,
        reader=reader,
        writer=writer,
        election=election,
        write_timeout_s=config.write_timeout_s,
    )
    reader.on_rejected = registry.repair
    forwarder = Forwarder(reader=reader, timeout_s=config.write_timeout_s)
    metrics = RegistryMetrics()
    api = Api(
        store=store,
        registry=registry,
        election=election,
        reader=reader,
        forwarder=forwarder,
        basic_auth=config.basic_auth,
        forward_timeout_s=config.write_timeout_s,
        metrics=metrics,
    )
    app = web.Application(client_max_size=_MAX_BODY_BYTES)
    app.router.add_get("/metrics", functools.partial(_metrics, metrics))  # before the catch-all
    app.router.add_route("*", "/{tail:.*}", api.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    reader.start()
    try:
        await _until_caught_up(reader, config)
        await runner.setup()
        try:
            await web.TCPSite(runner, config.host, config.port).start()
        except OSError as exc:
            raise RegistryServerError(
                f"cannot listen on {config.host}:{config.port}: {exc.strerror}"
            ) from None
        election.start()
        log.info("schema registry serving %s (topic %s)", config.url, config.topic)
        await stop.wait()
    finally:
        await runner.cleanup()
        await election.close()
        await forwarder.close()
        writer.close()
        reader.close()


async def _metrics(metrics: RegistryMetrics, request: web.Request) -> web.Response:
    """Prometheus exposition; open even with basic auth: it holds counts, no data."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(body=encoder(metrics.registry), headers={"Content-Type": content_type})


async def _until_caught_up(reader: Reader, config: RegistryConfig) -> None:
    try:
        await asyncio.wait_for(reader.caught_up(), config.startup_timeout_s)
    except TimeoutError:
        raise RegistryServerError(
            f"could not read topic {config.topic} within {config.startup_timeout_s:.0f}s"
        ) from None


def _ensure_topic(config: RegistryConfig) -> None:
    """Create the topic (1 partition, compacted) if missing; refuse one with more partitions."""
    admin = AdminClient(dict(config.kafka))
    spec = TopicSpec(config.topic, 1, config={"cleanup.policy": "compact"})
    if not ensure_topics(admin, [spec]):
        partitions = existing_topics(admin)[config.topic]
        if partitions != 1:
            raise RegistryServerError(
                f"topic {config.topic} has {partitions} partitions; the registry needs exactly 1"
            )
