"""Prometheus metrics of ``mesh registry serve``: requests by route template and status."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["RegistryMetrics"]

_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15)


class RegistryMetrics:
    """Requests served by ``mesh registry serve``, by route template (never the raw path)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = ["method", "endpoint"]
        self.requests = Counter(
            "mesh_registry_requests_total",
            "HTTP requests answered, by route template and status.",
            [*labels, "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "mesh_registry_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            labels,
            buckets=_REQUEST_BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(method, endpoint, str(status)).inc()
        self.duration.labels(method, endpoint).observe(seconds)
