"""Recorders, their exposition, and the status endpoint (no broker needed)."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mesh import Mesh
from mesh.dev.stack import free_port
from mesh.envelope import new_event_id
from mesh.errors import ConfigError
from mesh.runtime.metrics import Metrics, chain_started_s
from mesh.runtime.status import StatusServer, observed


def samples(metrics: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_recorded_numbers_come_out_as_prometheus_metrics() -> None:
    metrics = Metrics()
    shipper = metrics.agent("shipper")
    assert metrics.agent("shipper") is shipper
    shipper.consumed("orders", 3)
    shipper.handled("orders", "shop.Order", "ok", 0.003)
    shipper.handled("orders", "shop.Order", "ok", 0.2)
    shipper.handled("orders", "shop.Order", "error", 0.01)
    shipper.emitted("shipped", "shop.Shipped", 2)
    shipper.retried("orders", "transient")
    shipper.dead_lettered("orders", "fatal")
    shipper.retry_lateness(0.02)
    shipper.in_flight(7)
    shipper.paused_partitions(1)
    shipper.assigned(4)
    got = samples(metrics)

    def value(name: str, **labels: str) -> float:
        return got[name, frozenset({"agent": "shipper", **labels}.items())]

    assert value("mesh_events_consumed_total", topic="orders") == 3
    handled = {"topic": "orders", "event_type": "shop.Order"}
    assert value("mesh_events_handled_total", outcome="ok", **handled) == 2
    assert value("mesh_events_handled_total", outcome="error", **handled) == 1
    ok = {"event_type": "shop.Order", "outcome": "ok"}
    assert value("mesh_handler_duration_seconds_count", **ok) == 2
    assert value("mesh_handler_duration_seconds_sum", **ok) == pytest.approx(0.203)
    assert value("mesh_handler_duration_seconds_bucket", le="0.005", **ok) == 1  # cumulative
    assert value("mesh_handler_duration_seconds_bucket", le="0.25", **ok) == 2
    assert value("mesh_handler_duration_seconds_bucket", le="+Inf", **ok) == 2
    emitted = value("mesh_events_emitted_total", topic="shipped", event_type="shop.Shipped")
    assert emitted == 2
    assert value("mesh_events_retried_total", topic="orders", kind="transient") == 1
    assert value("mesh_events_dead_lettered_total", topic="orders", kind="fatal") == 1
    assert value("mesh_retry_lateness_seconds_bucket", le="0.025") == 1
    assert value("mesh_events_in_flight") == 7
    assert value("mesh_paused_partitions") == 1
    assert value("mesh_assigned_partitions") == 4


def test_chain_latency_is_measured_from_the_first_events_uuid7() -> None:
    correlation_id = new_event_id()
    started = chain_started_s(correlation_id)
    assert started is not None
    assert abs(started - time.time()) < 1
    assert chain_started_s("order-42") is None  # a caller's own correlation id
    metrics = Metrics()
    metrics.agent("a").chain_latency(correlation_id)
    metrics.agent("a").chain_latency("order-42")
    assert samples(metrics)["mesh_chain_latency_seconds_count", frozenset({("agent", "a")})] == 1


def test_ready_while_every_agent_holds_partitions_or_is_a_spare_and_polls() -> None:
    metrics = Metrics()
    assert not metrics.ready()  # no agent at all
    a, b = metrics.agent("a"), metrics.agent("b")
    a.assigned(2)
    a.polling()
    b.assigned(0)  # joined, holds nothing: lost its partitions, or a spare
    b.polling()
    assert not metrics.ready()
    metrics.spare("b", True)  # the lag thread saw more members than partitions
    assert metrics.ready()
    assert samples(metrics)["mesh_ready", frozenset()] == 1
    metrics.spare("b", False)
    a.assigned(0)
    assert not metrics.ready()


def test_status_server_answers_probes_and_scrapes() -> None:
    metrics = Metrics()
    metrics.agent("a").consumed("t")
    ready = [False]
    server = StatusServer(metrics.registry, ready=lambda: ready[0], host="127.0.0.1", port=0)
    server.start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 503
        ready[0] = True
        assert httpx.get(f"{base}/readyz").status_code == 200
        scraped = httpx.get(f"{base}/metrics")
        assert scraped.status_code == 200
        assert 'mesh_events_consumed_total{agent="a",topic="t"} 1.0' in scraped.text
        assert httpx.get(f"{base}/nope").status_code == 404
    finally:
        server.close()


def test_a_busy_port_fails_when_chosen_and_warns_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", free_port()))
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            StatusServer(Metrics().registry, ready=lambda: True, host="127.0.0.1", port=port)
        app = Mesh("unused")
        with observed(app, port=port, host="127.0.0.1", required=False) as metrics:
            assert isinstance(metrics, Metrics)
    assert "running without it" in caplog.text
