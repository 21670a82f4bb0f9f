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
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource
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
    #: Of the topic when the registry creates it; -1: the broker's default.
    replication_factor: int = -1
    #: Serve HTTPS with this certificate (PEM, chain included) and private key.
    tls_cert: str | None = None
    tls_key: str | None = None
    election_session_timeout_ms: int = 6000
    write_timeout_s: float = 15.0
    startup_timeout_s: float = 60.0

    @property
    def url(self) -> str:
        """Where other registries reach this one: ``advertised_url`` or derived from the bind."""
        if self.advertised_url:
            return self.advertised_url.rstrip("/")
        host = socket.getfqdn() if self.host in ("", "0.0.0.0", "::") else self.host
        scheme = "https" if self.tls_cert else "http"
        return f"{scheme}://{f'[{host}]' if ':' in host else host}:{self.port}"


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
    ssl_context = _ssl_context(config)
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
    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, logger=_ServerLog(log.getChild("http"))
    )
    reader.start()
    try:
        await _until_caught_up(reader, config)
        await runner.setup()
        try:
            await web.TCPSite(runner, config.host, config.port, ssl_context=ssl_context).start()
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
    """Wait until the state is read; refuse a topic that another registry wrote.

    Confluent Schema Registry and Karapace allocate ids on their own and cannot read the
    records mesh adds (``PRIMARY``, ``ID_FLOOR``): sharing a topic with them would hand
    out ids twice and leave records they choke on.
    """
    try:
        await asyncio.wait_for(reader.caught_up(), config.startup_timeout_s)
    except TimeoutError:
        raise RegistryServerError(
            f"could not read topic {config.topic} within {config.startup_timeout_s:.0f}s"
        ) from None
    if reader.foreign_offset is not None:
        raise RegistryServerError(
            f"topic {config.topic} holds a record that no mesh registry wrote (offset "
            f"{reader.foreign_offset}): it belongs to another schema registry (Confluent "
            "Schema Registry, Karapace); mesh will not write into it. Serve another --topic "
            "and copy the schemas over in IMPORT mode"
        )


class _ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, but a malformed request is one WARNING line: aiohttp
    already answers it 400, and a traceback per bad client would flood the log."""

    def exception(self, msg: object, *args: object, **kwargs: Any) -> None:
        error = kwargs.get("exc_info")
        if isinstance(error, HttpProcessingError) and (error.code or 400) < 500:
            # the first line only: the next ones quote the raw header, credentials included
            reason = error.message.partition("\n")[0]
            self.warning("malformed HTTP request (%s): %s", msg % args, reason)
        else:
            super().exception(msg, *args, **kwargs)


def _ssl_context(config: RegistryConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise RegistryServerError(
            f"cannot load the TLS certificate {config.tls_cert} and key {config.tls_key}: {exc}"
        ) from None
    return context


def _ensure_topic(config: RegistryConfig) -> None:
    """Create the topic (1 partition, compacted) if missing; refuse one that is not so."""
    admin = AdminClient(dict(config.kafka))
    spec = TopicSpec(
        config.topic,
        1,
        replication_factor=config.replication_factor,
        config={"cleanup.policy": "compact"},
    )
    if not ensure_topics(admin, [spec]):
        partitions = existing_topics(admin)[config.topic]
        if partitions != 1:
            raise RegistryServerError(
                f"topic {config.topic} has {partitions} partitions; the registry needs exactly 1"
            )
    policy = _cleanup_policy(admin, config.topic)
    if {part.strip() for part in policy.split(",")} != {"compact"}:
        raise RegistryServerError(
            f"topic {config.topic} has cleanup.policy={policy}; the registry needs "
            "cleanup.policy=compact (with delete, Kafka discards schemas once retention "
            "passes): alter the topic's config, or choose another --topic"
        )


def _cleanup_policy(admin: AdminClient, topic: str) -> str:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource], request_timeout=30)[resource].result()
    except KafkaException as exc:
        raise RegistryServerError(
            f"cannot read the config of topic {topic}: {exc.args[0].str()}"
        ) from None
    entry = entries.get("cleanup.policy")
    return "" if entry is None or entry.value is None else str(entry.value)
