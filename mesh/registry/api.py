"""The HTTP API (aiohttp): routing, request parsing and Confluent-style answers, nothing else.

Clients percent-encode subjects, ``/`` included; aiohttp's router decodes ``%2F`` before
matching, so :class:`Api` routes on the raw path itself. Every failure is answered as
``{"error_code": N, "message": ...}``; an unexpected exception is a bug, logged with its
traceback and answered 500 / 50001 without one.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from mesh.registry.election import Election
from mesh.registry.errors import ApiError, NotPrimaryError
from mesh.registry.forward import CONTENT_TYPE, FORWARDED_HEADER, OFFSET_HEADER, Forwarder
from mesh.registry.metrics import RegistryMetrics
from mesh.registry.reader import Reader
from mesh.registry.records import MODES
from mesh.registry.request import flag, json_body, page, parse_schema_id, schema_request
from mesh.registry.schema import SUPPORTED_TYPES
from mesh.registry.service import Registry
from mesh.registry.store import Store, parse_version
from mesh.schema.compatibility import CompatibilityLevel, parse_level

__all__ = ["Api"]

log = logging.getLogger(__name__)

Handler = Callable[[web.Request, list[str]], Awaitable[web.StreamResponse]]
_RETRY_S = 0.1
#: How long a request for an id above the highest known one waits for the reader to reach
#: the log's end: a client often asks this registry for an id another one just assigned.
_LAG_WAIT_S = 2.0
_UNMATCHED = "unmatched"  # the endpoint label of requests no route (and method) takes


class Api:
    """Routes requests to the store (reads) and the registry service (writes)."""

    def __init__(
        self,
        *,
        store: Store,
        registry: Registry,
        election: Election,
        reader: Reader,
        forwarder: Forwarder,
        basic_auth: str | None,
        forward_timeout_s: float,
        metrics: RegistryMetrics | None = None,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._registry = registry
        self._election = election
        self._reader = reader
        self._forwarder = forwarder
        self._token = None if basic_auth is None else base64.b64encode(basic_auth.encode())
        self._forward_timeout_s = forward_timeout_s
        self._routes: dict[tuple[str | None, ...], dict[str, Handler]] = {}
        for method, pattern, handler in [
            ("GET", "/", self.root),
            ("GET", "/schemas/types", self.schema_types),
            ("GET", "/schemas/ids/{}", self.schema_by_id),
            ("GET", "/schemas/ids/{}/schema", self.schema_text_by_id),
            ("GET", "/schemas/ids/{}/subjects", self.subjects_by_id),
            ("GET", "/schemas/ids/{}/versions", self.versions_by_id),
            ("GET", "/subjects", self.subjects),
            ("POST", "/subjects/{}", self.lookup),
            ("DELETE", "/subjects/{}", self.delete_subject),
            ("GET", "/subjects/{}/versions", self.versions),
            ("POST", "/subjects/{}/versions", self.register),
            ("GET", "/subjects/{}/versions/{}", self.version),
            ("DELETE", "/subjects/{}/versions/{}", self.delete_version),
            ("GET", "/subjects/{}/versions/{}/schema", self.version_text),
            ("GET", "/subjects/{}/versions/{}/referencedby", self.referenced_by),
            ("POST", "/compatibility/subjects/{}/versions/{}", self.check_version),
            ("POST", "/compatibility/subjects/{}/versions", self.check_versions),
            ("GET", "/config", self.config),
            ("PUT", "/config", self.put_config),
            ("DELETE", "/config", self.delete_config),
            ("GET", "/config/{}", self.config),
            ("PUT", "/config/{}", self.put_config),
            ("DELETE", "/config/{}", self.delete_config),
            ("GET", "/mode", self.mode),
            ("PUT", "/mode", self.put_mode),
        ]:
            key = tuple(None if part == "{}" else part for part in _split(pattern))
            self._routes.setdefault(key, {})[method] = handler

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The one aiohttp handler: authenticate, route, answer every error the Confluent way.

        Each answer is counted by route template (``/subjects/{}/versions``), never by raw
        path, so the metric's labels stay bounded.
        """
        started = time.perf_counter()
        endpoint = _UNMATCHED
        parts = _split(request.raw_path.partition("?")[0])
        try:
            if self._token is not None and (request.method, parts) != ("GET", []):
                self._authenticate(request)
            handler, params, endpoint = self._route(request.method, parts)
            response = await handler(request, params)
        except ApiError as exc:
            if exc.status >= 500:
                log.warning("%s %s: %s", request.method, request.path, exc.message)
            response = _error(exc)
        except web.HTTPException as exc:  # e.g. 413 from aiohttp when reading a huge body
            response = _error(ApiError(exc.status, exc.status, exc.reason))
        except Exception:
            log.exception("bug while answering %s %s", request.method, request.path)
            response = _error(ApiError.internal())
        if self._metrics is not None:
            method = request.method if endpoint != _UNMATCHED else "other"
            elapsed_s = time.perf_counter() - started
            self._metrics.observe(method, endpoint, response.status, elapsed_s)
        return response

    def _authenticate(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        assert self._token is not None
        if scheme.lower() != "basic" or not hmac.compare_digest(
            token.strip().encode(), self._token
        ):
            raise ApiError.unauthorized()

    def _route(self, method: str, parts: list[str]) -> tuple[Handler, list[str], str]:
        """The handler, its path parameters and the route template."""
        allowed: dict[str, Handler] | None = None
        for pattern, handlers in self._routes.items():
            if len(pattern) == len(parts) and all(
                p is None or p == part for p, part in zip(pattern, parts, strict=True)
            ):
                allowed = handlers
                params = [part for p, part in zip(pattern, parts, strict=True) if p is None]
                if method in handlers:
                    template = "/" + "/".join("{}" if p is None else p for p in pattern)
                    return handlers[method], params, template
        raise ApiError.route_not_found() if allowed is None else ApiError.method_not_allowed()

    async def _write(
        self, request: web.Request, operation: Callable[[], Awaitable[object]]
    ) -> web.StreamResponse:
        """Run a write here when we are the primary, else forward it to the primary."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._forward_timeout_s
        while True:
            try:
                result = await operation()
            except NotPrimaryError:
                if FORWARDED_HEADER in request.headers:
                    raise ApiError.no_primary("this registry is not the primary") from None
            else:
                return _json(result, headers={OFFSET_HEADER: str(self._reader.position)})
            primary_url = self._election.primary_url()
            if primary_url is not None:
                response = await self._forwarder.forward(request, primary_url)
                if response is not None:
                    return response
            if loop.time() >= deadline:
                raise ApiError.no_primary("no primary registry is available")
            await asyncio.sleep(_RETRY_S)

    # --- schemas by id -------------------------------------------------------------------

    async def root(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        return _json({})

    async def schema_types(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        return _json(list(SUPPORTED_TYPES))

    async def schema_by_id(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        schema_id = await self._schema_id(params[0])
        body = self._store.schema_body(schema_id)
        if body is None:
            raise ApiError.schema_not_found(f"Schema {schema_id} not found")
        return web.Response(body=body, content_type=CONTENT_TYPE)

    async def schema_text_by_id(
        self, request: web.Request, params: list[str]
    ) -> web.StreamResponse:
        return _raw(self._store.schema(await self._schema_id(params[0])).text)

    async def subjects_by_id(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        usages = await self._usages(request, params[0])
        return _json(page(request, list(dict.fromkeys(entry.subject for entry in usages))))

    async def versions_by_id(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        usages = await self._usages(request, params[0])
        pairs = [{"subject": entry.subject, "version": entry.version} for entry in usages]
        return _json(page(request, pairs))

    async def _usages(self, request: web.Request, text: str) -> list[Any]:
        parsed_id = await self._schema_id(text)
        self._store.schema(parsed_id)  # 40403 for an unknown id
        return self._store.usages(parsed_id, deleted=flag(request, "deleted"))

    async def _schema_id(self, text: str) -> int:
        """The id in *text*; when it is above every id known here, first (for a bounded
        time) let the reader catch up with the log, which may hold it already."""
        schema_id = parse_schema_id(text)
        if schema_id > self._store.max_id:
            try:
                await self._reader.catch_up(timeout_s=_LAG_WAIT_S)
            except ApiError as exc:
                log.info("answering 404 for schema id %d unread: %s", schema_id, exc.message)
        return schema_id

    # --- subjects and versions -----------------------------------------------------------

    async def subjects(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        deleted_only = flag(request, "deleted_only")
        found = self._store.subjects(deleted=deleted_only or flag(request, "deleted"))
        if deleted_only:
            live = set(self._store.subjects(deleted=False))
            found = [subject for subject in found if subject not in live]
        prefix = request.query.get("subjectPrefix", "")
        return _json(page(request, [subject for subject in found if subject.startswith(prefix)]))

    async def versions(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        entries = self._store.versions(params[0], deleted=flag(request, "deleted"))
        return _json(page(request, [entry.version for entry in entries]))

    async def version(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        subject, version = params[0], parse_version(params[1])
        entry = self._store.version(subject, version, deleted=flag(request, "deleted"))
        return _json(entry.to_json())

    async def version_text(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        subject, version = params[0], parse_version(params[1])
        return _raw(
            self._store.version(subject, version, deleted=flag(request, "deleted")).schema.text
        )

    async def referenced_by(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        entry = self._store.version(params[0], parse_version(params[1]), deleted=True)
        return _json(self._store.referenced_by(entry.subject, entry.version))

    async def lookup(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        schema = schema_request(await json_body(request))
        entry = self._registry.lookup(
            params[0],
            schema,
            normalize=flag(request, "normalize"),
            deleted=flag(request, "deleted"),
        )
        return _json(entry.to_json())

    async def register(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        schema, normalize = schema_request(await json_body(request)), flag(request, "normalize")

        async def operation() -> object:
            return {"id": await self._registry.register(params[0], schema, normalize=normalize)}

        return await self._write(request, operation)

    async def delete_subject(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        permanent = flag(request, "permanent")
        return await self._write(
            request, lambda: self._registry.delete_subject(params[0], permanent=permanent)
        )

    async def delete_version(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        subject, version = params[0], parse_version(params[1])
        permanent = flag(request, "permanent")
        return await self._write(
            request, lambda: self._registry.delete_version(subject, version, permanent=permanent)
        )

    # --- compatibility, config, mode -----------------------------------------------------

    async def check_version(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        version = parse_version(params[1])
        schema = schema_request(await json_body(request))
        problems = self._registry.check(params[0], version, schema, every=False)
        return _compatibility_answer(request, problems)

    async def check_versions(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        schema = schema_request(await json_body(request))
        problems = self._registry.check(params[0], None, schema, every=True)
        return _compatibility_answer(request, problems)

    async def config(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        subject = params[0] if params else None
        level = self._store.config(subject)
        if level is None and (subject is None or flag(request, "defaultToGlobal")):
            level = self._store.compatibility(subject)
        if level is None:
            raise ApiError.subject_config_not_found(str(subject))
        return _json({"compatibilityLevel": level.value})

    async def put_config(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        subject = params[0] if params else None
        body = await json_body(request)
        requested = body.get("compatibility", body.get("compatibilityLevel"))
        level = parse_level(requested)
        if level is None:
            raise ApiError.invalid_compatibility(requested)

        async def operation() -> object:
            await self._registry.set_config(subject, level)
            return {"compatibility": level.value}

        return await self._write(request, operation)

    async def delete_config(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        subject = params[0] if params else None

        async def operation() -> object:
            level: CompatibilityLevel = await self._registry.delete_config(subject)
            return {"compatibilityLevel": level.value}

        return await self._write(request, operation)

    async def mode(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        return _json({"mode": self._store.mode})

    async def put_mode(self, request: web.Request, params: list[str]) -> web.StreamResponse:
        requested = (await json_body(request)).get("mode")
        if not isinstance(requested, str) or requested.upper() not in MODES:
            raise ApiError.invalid_mode(requested)
        mode = requested.upper()

        async def operation() -> object:
            await self._registry.set_mode(mode)
            return {"mode": mode}

        return await self._write(request, operation)


def _split(path: str) -> list[str]:
    stripped = path.strip("/")
    return [unquote(part) for part in stripped.split("/")] if stripped else []


def _json(data: object, *, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), content_type=CONTENT_TYPE, headers=headers)


def _raw(text: str) -> web.Response:
    return web.Response(body=text.encode(), content_type=CONTENT_TYPE)


def _error(exc: ApiError) -> web.Response:
    headers = {"WWW-Authenticate": 'Basic realm="mesh-registry"'} if exc.status == 401 else None
    return web.Response(
        status=exc.status, body=exc.body(), content_type=CONTENT_TYPE, headers=headers
    )


def _compatibility_answer(request: web.Request, problems: list[str]) -> web.Response:
    answer: dict[str, object] = {"is_compatible": not problems}
    if flag(request, "verbose"):
        answer["messages"] = problems
    return _json(answer)
