"""Metrics, health and logs of real runs: the counters equal what the test sent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from mesh import Mesh, Settings
from mesh.dev.stack import free_port
from mesh.runtime.status import observed
from mesh.runtime.topology import dead_letter_topic
from mesh.testing import unique_name
from tests.runtime.observability import (
    ATTEMPTS,
    FAILING,
    SENT,
    add_shipper,
    event_types,
    eventually,
    http_status,
    scrape,
    series,
    total,
)
from tests.support import read_topic, running

REPO = Path(__file__).resolve().parents[2]


def test_worker_metrics_count_what_was_sent(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    Order, Shipped = event_types()
    app = make_app(Order, Shipped)
    add_shipper(app, Order, Shipped)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    source = Order.topic()

    with observed(app, port=port, host="127.0.0.1", lag_interval_s=0.3) as metrics:
        assert httpx.get(f"{base}/healthz").status_code == 200
        assert httpx.get(f"{base}/readyz").status_code == 503  # no agent is polling yet
        for n in range(SENT):
            app.publish(Order(order_id=f"o{n}", n=n))
        # Lag is committed vs end offsets, read from the broker: the group has read nothing.
        before = eventually(
            lambda: scrape(f"{base}/metrics"),
            lambda s: total(s, "mesh_consumer_lag", topic=source) == SENT,
        )
        assert total(before, "mesh_consumer_lag", agent="shipper", topic=source) == SENT
        assert len(series(before, "mesh_consumer_lag", topic=source)) == 3  # per partition

        with running(app, metrics=metrics):
            read_topic(
                mesh_settings.bootstrap_servers, Shipped.topic(), SENT - FAILING, partitions=3
            )
            dlq = dead_letter_topic(source, app.group_id("shipper"))
            read_topic(mesh_settings.bootstrap_servers, dlq, FAILING, partitions=3)
            ready = eventually(lambda: httpx.get(f"{base}/readyz").status_code, lambda c: c == 200)
            after = eventually(
                lambda: scrape(f"{base}/metrics"),
                lambda s: (
                    total(s, "mesh_events_dead_lettered_total") == FAILING
                    and total(s, "mesh_consumer_lag", topic=source) == 0
                    and total(s, "mesh_events_in_flight") == 0
                ),
            )

    # Consumer lag needs no wiring in the worker: the committed offsets caught up.
    assert total(after, "mesh_consumer_lag", topic=source) == 0
    # The rest is recorded by the worker (AgentWorker calls AgentMetrics).
    ok = SENT - FAILING
    assert ready == 200
    assert total(after, "mesh_ready") == 1
    assert total(after, "mesh_events_consumed_total", agent="shipper", topic=source) == SENT
    assert total(after, "mesh_events_consumed_total", agent="shipper") == SENT + FAILING
    handled = "mesh_events_handled_total"
    assert total(after, handled, agent="shipper", outcome="ok") == ok
    assert total(after, handled, agent="shipper", outcome="error") == FAILING * ATTEMPTS
    assert total(after, handled, event_type="test.Order") == ok + FAILING * ATTEMPTS
    assert total(after, "mesh_handler_duration_seconds_count", outcome="ok") == ok
    emitted = "mesh_events_emitted_total"
    assert total(after, emitted, topic=Shipped.topic(), event_type="test.Shipped") == ok
    retried = "mesh_events_retried_total"
    assert total(after, retried, topic=source, kind="transient") == FAILING * (ATTEMPTS - 1)
    dead = "mesh_events_dead_lettered_total"
    assert total(after, dead, topic=source, kind="transient") == FAILING
    assert total(after, "mesh_chain_latency_seconds_count", agent="shipper") == ok
    assert total(after, "mesh_retry_lateness_seconds_count") == FAILING * (ATTEMPTS - 1)
    assert total(after, "mesh_events_in_flight") == 0
    assert total(after, "mesh_assigned_partitions", agent="shipper") == 3 + 3  # + retry topic


def test_mesh_run_serves_health_and_metrics_and_logs_json(mesh_settings: Settings) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MESH_BOOTSTRAP_SERVERS": mesh_settings.bootstrap_servers,
        "MESH_REGISTRY_URL": mesh_settings.registry_url,
        "MESH_KAFKA": '{"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}',
        "MESH_METRICS_HOST": "127.0.0.1",
    }
    question_id = unique_name("q")
    with open(os.devnull, "wb") as devnull, subprocess.Popen(
        [sys.executable, "-m", "mesh", "run", "agents.hello:app", "--metrics-port", str(port)],
        cwd=REPO, env=env, stdout=devnull, stderr=subprocess.PIPE,
    ) as worker:  # fmt: skip
        try:
            health = eventually(http_status(f"{base}/healthz"), lambda c: c == 200)
            assert health == 200
            published = subprocess.run(
                [sys.executable, "-m", "mesh", "publish", "agents.hello:Question", "--data",
                 json.dumps({"question_id": question_id, "text": "ping?"})],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert published.returncode == 0, published.stderr
            answers = read_topic(mesh_settings.bootstrap_servers, "answers", 1, partitions=3)
            assert answers
            lagging = eventually(  # read every 10 s, from the broker
                lambda: scrape(f"{base}/metrics"),
                lambda s: bool(series(s, "mesh_consumer_lag", agent="answerer", topic="questions")),
            )
            assert series(lagging, "mesh_consumer_lag", agent="answerer", topic="questions")
            wired = eventually(
                lambda: scrape(f"{base}/metrics"),
                lambda s: total(s, "mesh_events_handled_total", agent="answerer") >= 1,
                timeout_s=10,
            )
            readyz = httpx.get(f"{base}/readyz").status_code
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(60)
        stderr = worker.stderr.read().decode() if worker.stderr else ""
    assert code == 0, stderr
    # stderr is a pipe, not a terminal: one JSON object per line, event ids bound.
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    answering = [line for line in lines if line["message"] == f"answering {question_id}"]
    assert len(answering) == 1, stderr
    assert answering[0]["logger"] == "mesh.agent.answerer"
    assert answering[0]["agent"] == "answerer"
    assert answering[0]["event_id"] == answering[0]["correlation_id"]  # a chain's first event
    assert answering[0]["level"] == "info"
    # Recorded by the worker (needs the AgentWorker wiring):
    assert total(wired, "mesh_events_handled_total", agent="answerer", outcome="ok") >= 1
    assert readyz == 200


def test_registry_counts_requests_by_route_template(mesh_registry_url: str) -> None:
    subject = unique_name("subject")
    endpoint = {"method": "GET", "endpoint": "/subjects/{}/versions", "status": "404"}
    metrics_url = f"{mesh_registry_url}/metrics"
    before = total(scrape(metrics_url), "mesh_registry_requests_total", **endpoint)
    for _ in range(3):
        assert httpx.get(f"{mesh_registry_url}/subjects/{subject}/versions").status_code == 404
    assert httpx.get(f"{mesh_registry_url}/no/such/route").status_code == 404
    samples = scrape(metrics_url)

    assert total(samples, "mesh_registry_requests_total", **endpoint) == before + 3
    assert total(samples, "mesh_registry_requests_total", endpoint="unmatched") >= 1
    duration = "mesh_registry_request_duration_seconds_count"
    assert total(samples, duration, method="GET", endpoint="/subjects/{}/versions") >= 3
    labels = {value for _, ls in samples for _, value in ls}
    assert not any(subject in value for value in labels)  # raw paths never become labels
