"""Forwarding a write to the primary, then catching up with it before answering.

The primary answers with the offset its reader had reached (``X-Mesh-Registry-Offset``);
waiting until our own reader reaches it makes a forwarded write visible here as soon as
the client has its answer. A request forwarded once is never forwarded again, so two
registries that disagree about the primary cannot bounce a request between them.
"""

from __future__ import annotations

import json
import logging

import aiohttp
from aiohttp import web
from yarl import URL

from mesh.registry.reader import Reader

__all__ = ["CONTENT_TYPE", "FORWARDED_HEADER", "OFFSET_HEADER", "Forwarder"]

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
OFFSET_HEADER = "X-Mesh-Registry-Offset"
FORWARDED_HEADER = "X-Mesh-Registry-Forwarded"
_PASSED_HEADERS = ("Content-Type", "Authorization", "Accept")


class Forwarder:
    def __init__(self, *, reader: Reader, timeout_s: float) -> None:
        self._reader = reader
        self._timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def forward(self, request: web.Request, primary_url: str) -> web.Response | None:
        """The primary's answer to *request*; None when it cannot answer it now."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s)
            )
        headers = {
            name: request.headers[name] for name in _PASSED_HEADERS if name in request.headers
        }
        headers[FORWARDED_HEADER] = "1"
        url = URL(primary_url.rstrip("/") + request.raw_path, encoded=True)
        try:
            async with self._session.request(
                request.method, url, data=await request.read(), headers=headers
            ) as response:
                status, payload = response.status, await response.read()
                offset = response.headers.get(OFFSET_HEADER, "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("cannot forward to the primary at %s: %r", primary_url, exc)
            return None
        if status >= 500 and _error_code(payload) == 50003:
            return None  # it is not the primary (any more): wait for the next announcement
        extra = {}
        if offset.isdigit():
            await self._reader.wait_for(int(offset), timeout_s=self._timeout_s)
            extra[OFFSET_HEADER] = offset
        return web.Response(status=status, body=payload, content_type=CONTENT_TYPE, headers=extra)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _error_code(payload: bytes) -> object:
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    return data.get("error_code") if isinstance(data, dict) else None
