"""The HTTP status endpoint of ``mesh run``: ``/metrics``, ``/healthz`` and ``/readyz``.

It runs in a thread of its own, not on the loop that runs the handlers, so a scrape or a
probe is answered even while a handler hogs the loop.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from mesh.errors import ConfigError
from mesh.runtime.lag import ConsumerLag
from mesh.runtime.metrics import Metrics

if TYPE_CHECKING:
    from mesh.runtime.app import Mesh

__all__ = ["StatusServer", "observed"]

log = logging.getLogger(__name__)


class StatusServer:
    """Serves a metrics registry, liveness and readiness over HTTP until closed."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        ready: Callable[[], bool],
        host: str = "0.0.0.0",
        port: int,
    ) -> None:
        handler = type(
            "_Handler", (_Handler,), {"registry": registry, "ready": staticmethod(ready)}
        )
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror} (set metrics_port)"
            ) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="mesh-status", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("metrics on http://%s:%d/metrics", *self._server.server_address[:2])

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    ready: Callable[[], bool]

    def do_GET(self) -> None:
        path = self.path.partition("?")[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._answer(200, encoder(self.registry), content_type)
        elif path == "/healthz":
            self._answer(200, b"ok\n")
        elif path == "/readyz":
            ok = self.ready()
            self._answer(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
        else:
            self._answer(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
        pass


@contextmanager
def observed(
    app: Mesh,
    agents: Sequence[str] | None = None,
    *,
    port: int,
    host: str = "0.0.0.0",
    lag_interval_s: float = 10.0,
    required: bool = True,
) -> Iterator[Metrics]:
    """Metrics for a run of *app*'s *agents*, served on *port* (0: recorded, not served).

    Pass the yielded :class:`Metrics` to :meth:`Mesh.serve`. While served, consumer lag is
    read from the broker every *lag_interval_s*. A busy *port* is an error when
    *required*, else a warning: a second ``mesh run`` on one host with the default port
    still runs, unobserved.
    """
    metrics = Metrics()
    server = None
    if port:
        try:
            server = StatusServer(metrics.registry, ready=metrics.ready, host=host, port=port)
        except ConfigError as exc:
            if required:
                raise
            log.warning("%s; running without it", exc)
    if server is None:
        yield metrics
        return
    specs = app.agents
    groups = {}
    for name in agents or specs:
        if name in specs:  # an unknown name is reported by Mesh.serve
            topology = app.topology(name)
            groups[name] = (topology.group_id, list(topology.consumed))
    lag = ConsumerLag(app.settings, groups, interval_s=lag_interval_s, on_spare=metrics.spare)
    metrics.registry.register(lag)
    server.start()
    lag.start()
    try:
        yield metrics
    finally:
        lag.close()
        server.close()
