"""The console's web application: routes, live streams and the safety rules.

Safety, in one place: the server binds where it is told (``127.0.0.1`` by default, see
the CLI); every write is a POST that needs the process's CSRF token, is refused unless
the console was started with ``allow_writes``, and, like every page, needs basic auth
when ``auth`` (else the settings' ``console_auth``) is set. No inline script or style is
allowed (Content-Security-Policy), and every response passes through
:meth:`Console.scrub`, which masks the registry and console passwords and the Kafka
secrets wherever an error message might have carried them.

Library calls block on the broker, so handlers run them in threads; the overview's
counts come from a :class:`~mesh.console.source.Sampler` refreshed every ``refresh_s``
while someone looks and every ``idle_s`` otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from confluent_kafka import KafkaException
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from mesh.config import Settings, parse_duration, redact_url
from mesh.console import pages
from mesh.console.html import Markup
from mesh.console.metrics import AgentRates, Scraper
from mesh.console.source import (
    AgentInfo,
    AgentSample,
    Sampler,
    app_agents,
    cluster_agents,
    latest_failures,
    read_record,
    tail_starts,
    topic_sizes,
)
from mesh.errors import ConfigError, InputError, MeshError
from mesh.kafka.reader import Tail, TailRecord, tail_record
from mesh.ops.dlq import (
    DeadLetter,
    DeadLetterFilter,
    dead_letter_topics,
    read_by_id,
    read_dead_letters,
    read_one,
    redrive,
)
from mesh.ops.trace import trace
from mesh.runtime.app import Mesh
from mesh.runtime.failure import DeadLetterReason
from mesh.schema.subjects import diff_versions, list_subjects, show_version
from mesh.serde import Serde

__all__ = ["Console", "ConsoleOptions", "build_app", "serving"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_STATIC = Path(__file__).parent / "static"
_MASK = "**********"
#: A page viewed this recently counts as someone looking (overview refreshed often).
_WATCHED_S = 30.0
_DEAD_LETTERS_SHOWN = 500
#: A live stream with nothing to send writes a comment this often to notice a gone client.
_PING_S = 15.0


@dataclass(frozen=True)
class ConsoleOptions:
    """How ``mesh console`` was started."""

    settings: Settings
    app: Mesh | None = None
    metrics_urls: Sequence[str] = ()
    allow_writes: bool = False
    #: "user:password" for basic auth on every request; None: the settings' console_auth.
    auth: str | None = None
    refresh_s: float = 2.0
    idle_s: float = 60.0  # a round of 2,000 partitions costs ~0.5 s of CPU on Tansu
    trace_since: str = "24h"


@dataclass
class Snapshot:
    agents: list[AgentInfo]
    samples: dict[str, AgentSample]
    rates: dict[str, AgentRates]
    error: str | None = None
    version: int = 0


@dataclass
class Console:
    """The state of one console process: its options, token, sampler and last snapshot."""

    options: ConsoleOptions
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def __post_init__(self) -> None:
        settings = self.options.settings
        self.sampler = Sampler(settings)
        self.scraper = Scraper(self.options.metrics_urls)
        self.serde = Serde.from_settings(settings)
        self.snapshot: Snapshot | None = None
        self.chrome = pages.Chrome(
            app=self.options.app.name if self.options.app else None,
            bootstrap=settings.bootstrap_servers,
            registry=redact_url(settings.registry_url),
            writes=self.options.allow_writes,
            csrf=self.csrf,
        )
        auth = self.options.auth
        if auth is None and settings.console_auth is not None:
            auth = settings.console_auth.get_secret_value()
        self.auth = auth
        self._secrets = _secrets(settings, auth)
        self._sampling = ThreadPoolExecutor(1, thread_name_prefix="mesh-console-sample")
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._viewed = time.monotonic()
        self.watchers = 0

    @property
    def settings(self) -> Settings:
        return self.options.settings

    def scrub(self, text: str) -> str:
        """*text* with every secret of the settings masked."""
        for secret in self._secrets:
            text = text.replace(secret, _MASK)
        return text

    def viewed(self) -> None:
        if time.monotonic() - self._viewed > _WATCHED_S:
            self._wake.set()  # idle until now: refresh at once
        self._viewed = time.monotonic()

    def watched(self) -> bool:
        return self.watchers > 0 or time.monotonic() - self._viewed < _WATCHED_S

    async def refresh(self, session: aiohttp.ClientSession) -> Snapshot:
        loop = asyncio.get_running_loop()
        previous = self.snapshot
        try:
            agents, samples = await loop.run_in_executor(self._sampling, self._sample)
            rates = await self.scraper.scrape(session)
            snapshot = Snapshot(agents, samples, rates)
        except (MeshError, KafkaException) as exc:
            kept = previous or Snapshot([], {}, {})
            snapshot = Snapshot(kept.agents, kept.samples, kept.rates, error=self.scrub(str(exc)))
        snapshot.version = (previous.version + 1) if previous else 1
        self.snapshot = snapshot
        async with self._changed:
            self._changed.notify_all()
        return snapshot

    def _sample(self) -> tuple[list[AgentInfo], dict[str, AgentSample]]:
        app = self.options.app
        agents = app_agents(app) if app is not None else cluster_agents(self.settings)
        return agents, self.sampler.sample(agents)

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Refresh the snapshot for as long as the server runs."""
        while True:
            try:
                await self.refresh(session)
            except Exception:  # a surprise must not freeze the overview for good
                log.exception("console: refreshing the overview failed")
            interval = self.options.refresh_s if self.watched() else self.options.idle_s
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)

    async def next_snapshot(self, after: int) -> Snapshot:
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.snapshot is not None and self.snapshot.version > after
            )
        assert self.snapshot is not None
        return self.snapshot

    def rows(self, snapshot: Snapshot) -> list[pages.OverviewRow]:
        """One row per agent. Metrics name agents as the app does; an agent found on the
        cluster is named by its group, ``{app}.{agent}`` unless the app chose another."""
        return [
            pages.OverviewRow(
                agent,
                snapshot.samples.get(agent.name),
                (
                    snapshot.rates.get(agent.name)
                    or snapshot.rates.get(agent.group_id.rpartition(".")[2])
                )
                if self.scraper.urls
                else None,
                self.sampler.alerts(agent.name),
            )
            for agent in snapshot.agents
        ]

    def close(self) -> None:
        self._sampling.submit(self.sampler.close).result()
        self._sampling.shutdown()


def _secrets(settings: Settings, auth: str | None = None) -> list[str]:
    """Every secret value the settings hold: the registry password (in its URL or in
    registry_auth), the console's own password (*auth*, console_auth) and each Kafka
    property that :meth:`Settings.redacted` masks."""
    found = []
    for credentials in (auth, settings.console_auth and settings.console_auth.get_secret_value()):
        if credentials:
            found.append(credentials.partition(":")[2])
    password = urlsplit(settings.registry_url).password
    if password:
        found.append(password)
    if settings.registry_auth is not None:
        found.append(settings.registry_auth.get_secret_value().partition(":")[2])
    masked = settings.redacted()["kafka"]
    found += [str(v) for k, v in settings.kafka.items() if masked[k] != v]
    return sorted({s for s in found if s}, key=len, reverse=True)


# -- the application -------------------------------------------------------------------------

CONSOLE = web.AppKey("console", Console)
SESSION = web.AppKey("session", aiohttp.ClientSession)

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


def build_app(console: Console) -> web.Application:
    """The aiohttp application of *console*: run it with ``web.run_app`` or a test server."""
    app = web.Application(middlewares=[_auth, _errors])
    app[CONSOLE] = console
    app.on_response_prepare.append(_security_headers)
    app.cleanup_ctx.append(_background)
    routes = [
        web.get("/", overview),
        web.get("/events/overview", overview_events),
        web.get("/agents/{name}", agent),
        web.get("/chain", chain),
        web.get("/record/{topic}/{partition:\\d+}/{offset:\\d+}", record),
        web.get("/dlq", dead_letters),
        web.get("/dlq/{id}", dead_letter),
        web.post("/dlq/redrive", redrive_letters),
        web.get("/topics", topics),
        web.get("/topics/{name}", topic),
        web.get("/events/topics/{name}", topic_events),
        web.get("/schemas", schemas),
        web.get("/schemas/{subject}", subject),
        web.static("/static", _STATIC),
    ]
    app.add_routes(routes)
    return app


@contextmanager
def serving(options: ConsoleOptions, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """The console served by a thread of its own for the duration of the block: its URL.

    For a process that does other work meanwhile (a test, a script taking screenshots);
    ``mesh console`` serves on its main thread instead. Port 0 picks a free one.
    """
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(build_app(Console(options)))

    async def start() -> tuple[str, int]:
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        bound, chosen = runner.addresses[0][:2]
        return bound, chosen

    thread = threading.Thread(target=loop.run_forever, name="mesh-console", daemon=True)
    thread.start()
    try:
        bound, chosen = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
        yield f"http://{bound}:{chosen}"
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


async def _background(app: web.Application) -> AsyncIterator[None]:
    console = app[CONSOLE]
    async with aiohttp.ClientSession() as session:
        app[SESSION] = session
        task = asyncio.create_task(console.run(session))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await asyncio.to_thread(console.close)


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    # Not no-referrer: a browser then sends "Origin: null" with the console's own forms.
    response.headers["Referrer-Policy"] = "same-origin"
    if not request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Basic auth on every request when the console has credentials."""
    expected = request.app[CONSOLE].auth
    if expected is None:
        return await handler(request)
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    try:
        given = base64.b64decode(encoded, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        given = ""
    if scheme.lower() == "basic" and hmac.compare_digest(given.encode(), expected.encode()):
        return await handler(request)
    raise web.HTTPUnauthorized(
        text="authentication required\n", headers={"WWW-Authenticate": 'Basic realm="mesh console"'}
    )


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A library error is a page saying what went wrong, with secrets masked."""
    console = request.app[CONSOLE]
    try:
        return await handler(request)
    except (InputError, ConfigError) as exc:
        status, message = 400, str(exc)
    except (MeshError, KafkaException, SchemaRegistryError) as exc:
        status, message = 502, str(exc) or type(exc).__name__
    return _page(console, pages.error_page(console.chrome, status, message), status=status)


def _page(console: Console, markup: Markup, *, status: int = 200) -> web.Response:
    return web.Response(
        text=console.scrub(markup), status=status, content_type="text/html", charset="utf-8"
    )


async def _blocking(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    return await asyncio.to_thread(function, *args, **kwargs)


# -- pages --------------------------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    console.viewed()
    snapshot = console.snapshot or await console.refresh(request.app[SESSION])
    errors = [snapshot.error] if snapshot.error else []
    errors += [f"{url}: {why}" for url, why in console.scraper.errors.items()]
    return _page(console, pages.overview_page(console.chrome, console.rows(snapshot), errors))


async def overview_events(request: web.Request) -> web.StreamResponse:
    """The overview's table body each time the counts are refreshed."""
    console = request.app[CONSOLE]
    console.viewed()

    async def bodies() -> AsyncGenerator[tuple[str, Markup]]:
        console.watchers += 1
        try:
            version = 0
            while True:
                snapshot = await console.next_snapshot(version)
                version = snapshot.version
                yield "overview", pages.overview_rows(console.rows(snapshot))
        finally:
            console.watchers -= 1

    return await _stream(request, bodies())


async def agent(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    console.viewed()
    name = request.match_info["name"]
    snapshot = console.snapshot or await console.refresh(request.app[SESSION])
    row = next((r for r in console.rows(snapshot) if r.agent.name == name), None)
    if row is None:
        return _page(
            console, pages.error_page(console.chrome, 404, f"no agent {name!r}"), status=404
        )
    failures = await _blocking(
        latest_failures, console.settings, row.agent.retry_topics + row.agent.dead_letter_topics
    )
    return _page(console, pages.agent_page(console.chrome, row, failures))


async def chain(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    query = request.query.get("id", "").strip()
    since = request.query.get("since", "").strip() or console.options.trace_since
    found = None
    if query:
        try:
            since_s = parse_duration(since)
        except ValueError as exc:
            raise InputError(f"within {since}: {exc}") from None
        found = await _blocking(
            trace, console.settings, query, since_s=since_s, app=console.options.app
        )
    return _page(console, pages.chain_page(console.chrome, query, since, found))


async def record(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    info = request.match_info
    found = await _blocking(
        read_record,
        console.settings,
        console.serde,
        info["topic"],
        int(info["partition"]),
        int(info["offset"]),
    )
    return _page(console, pages.record_page(console.chrome, found))


async def dead_letters(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    query = {k: v.strip() for k, v in request.query.items() if v.strip()}
    where = _filter(query)
    app = console.options.app
    names: list[str]
    if app is not None:
        names = list(app.agents)
        topics = await _blocking(
            dead_letter_topics, console.settings, app=app, agent=query.get("agent")
        )
    else:
        snapshot = console.snapshot or await console.refresh(request.app[SESSION])
        agents = snapshot.agents
        names = [a.name for a in agents]
        wanted = [a for a in agents if query.get("agent") in (None, a.name)]
        topics = [t for a in wanted for t in a.dead_letter_topics]

    def read() -> list[DeadLetter]:
        found = read_dead_letters(console.settings, topics, where=where)
        letters = list(found)
        letters.sort(key=lambda letter: letter.timestamp_ms or 0, reverse=True)
        return letters[:_DEAD_LETTERS_SHOWN]

    letters = await _blocking(read)
    return _page(
        console, pages.dead_letters_page(console.chrome, letters, names, query, len(topics))
    )


def _filter(query: dict[str, str]) -> DeadLetterFilter:
    since_ms = None
    if "since" in query:
        try:
            since_ms = int((time.time() - parse_duration(query["since"])) * 1000)
        except ValueError as exc:
            raise InputError(f"within {query['since']}: {exc}") from None
    reason = query.get("reason")
    if reason is not None and reason not in {r.value for r in DeadLetterReason}:
        raise InputError(f"no dead-letter reason {reason!r}")
    return DeadLetterFilter(
        since_ms=since_ms,
        error_class=query.get("error_class"),
        agent=query.get("agent"),
        reason=None if reason is None else DeadLetterReason(reason),
    )


async def dead_letter(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    letter, found = await _blocking(read_one, console.settings, request.match_info["id"])
    return _page(console, pages.dead_letter_page(console.chrome, letter, found))


async def redrive_letters(request: web.Request) -> web.Response:
    """A dry run of the selected dead letters' redrive; with ``confirm``, the redrive, of
    those redriven before too only with ``force``."""
    console = request.app[CONSOLE]
    if not console.options.allow_writes:
        raise web.HTTPForbidden(text="read-only: start the console with --allow-writes\n")
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        raise web.HTTPForbidden(text="cross-origin request refused\n")
    form = await request.post()
    token = form.get("csrf")
    if not isinstance(token, str) or not hmac.compare_digest(token, console.csrf):
        raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page\n")
    ids = list(dict.fromkeys(str(i) for i in form.getall("id", [])))
    if not ids:
        raise InputError("select at least one dead letter")
    execute = form.get("confirm") == "yes"
    force = execute and form.get("force") == "yes"  # a dry run shows the redriven apart

    def run() -> Any:
        letters = read_by_id(console.settings, ids)
        return redrive(console.settings, letters, execute=execute, force=force)

    report = await _blocking(run)
    return _page(console, pages.redrive_page(console.chrome, report, ids))


async def topics(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    sizes = await _blocking(topic_sizes, console.settings)
    return _page(console, pages.topics_page(console.chrome, sizes))


async def topic(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    name = request.match_info["name"]
    _position(request)  # bad input fails the page, not its stream
    query = "&".join(f"{k}={v}" for k, v in request.query.items() if k in ("offset", "time") and v)
    return _page(console, pages.topic_page(console.chrome, name, query))


def _position(request: web.Request) -> tuple[int | None, int | None]:
    """``?offset=N`` or ``?time=ISO-8601`` of a topic page: (offset, epoch ms)."""
    offset, at = request.query.get("offset", "").strip(), request.query.get("time", "").strip()
    if offset:
        if not offset.isdigit():
            raise InputError(f"offset {offset!r} is not a number")
        return int(offset), None
    if at:
        try:
            moment = datetime.fromisoformat(at)
        except ValueError:
            raise InputError(f"time {at!r} is not ISO-8601 (2026-12-03T12:00:00Z)") from None
        if moment.tzinfo is None:
            raise InputError(f"time {at!r} needs a time zone (Z or +01:00)")
        return None, int(moment.timestamp() * 1000)
    return None, None


async def topic_events(request: web.Request) -> web.StreamResponse:
    """Records of a topic as they arrive, from the position asked for, as table rows."""
    console = request.app[CONSOLE]
    name = request.match_info["name"]
    offset, at_ms = _position(request)
    starts = await _blocking(tail_starts, console.settings, name, offset=offset, at_ms=at_ms)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[list[TailRecord]] = asyncio.Queue()
    stop = threading.Event()

    def read() -> None:
        serde = console.serde
        with Tail(console.settings, name, starts=starts, serde=serde) as tail:
            while not stop.is_set():
                for batch in tail.batches(idle_timeout_s=0.5):
                    records = [tail_record(m, serde) for m in batch[-200:]]
                    loop.call_soon_threadsafe(queue.put_nowait, records)
                    if stop.is_set():
                        return

    reader = threading.Thread(target=read, name="mesh-console-tail", daemon=True)
    reader.start()

    async def rows() -> AsyncGenerator[tuple[str, Markup]]:
        try:
            while True:
                try:
                    records = await asyncio.wait_for(queue.get(), _PING_S)
                except TimeoutError:
                    yield "", Markup()  # a quiet topic: find out whether the client left
                    continue
                yield "records", pages.record_rows(records)
        finally:
            stop.set()

    return await _stream(request, rows())


async def schemas(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]

    def read() -> list[tuple[Any, str]]:
        client = SchemaRegistryClient(console.settings.registry_config())
        return [(info, _level(client, info.subject)) for info in list_subjects(client)]

    return _page(console, pages.schemas_page(console.chrome, await _blocking(read)))


async def subject(request: web.Request) -> web.Response:
    console = request.app[CONSOLE]
    name = request.match_info["subject"]
    query = request.query

    def number(key: str) -> int | None:
        value = query.get(key, "").strip()
        if value and not value.isdigit():
            raise InputError(f"{key} {value!r} is not a version number")
        return int(value) if value else None

    def read() -> Any:
        client = SchemaRegistryClient(console.settings.registry_config())
        shown = show_version(client, name, number("version"))
        versions = sorted(client.get_versions(name))
        diff = None
        if "old" in query or len(versions) > 1:
            diff = diff_versions(client, name, number("old"), number("new"))
        return versions, _level(client, name), shown, diff

    versions, level, shown, diff = await _blocking(read)
    return _page(
        console,
        pages.subject_page(console.chrome, name, versions, level=level, shown=shown, diff=diff),
    )


def _level(client: SchemaRegistryClient, subject: str) -> str:
    """The subject's compatibility level, or the registry's default when it has none."""
    try:
        return str(client.get_compatibility(subject))
    except SchemaRegistryError as exc:
        if exc.http_status_code != 404:
            raise
    return f"{client.get_compatibility()} (registry default)"


async def _stream(
    request: web.Request, events: AsyncGenerator[tuple[str, Markup]]
) -> web.StreamResponse:
    """Server-sent events: each (name, HTML) pair as one event, until the client leaves;
    an empty name is a comment, which only tells whether the client is still there."""
    console = request.app[CONSOLE]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
    )
    await response.prepare(request)
    try:
        async for name, data in events:
            if not name:
                await response.write(b": ping\n\n")
                continue
            lines = console.scrub(data).splitlines() or [""]
            payload = "".join(f"data: {line}\n" for line in lines)
            await response.write(f"event: {name}\n{payload}\n".encode())
    except ConnectionResetError:
        pass  # the client left
    finally:
        await events.aclose()
    return response
