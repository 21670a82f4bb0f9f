"""A real Prometheus scrapes a running worker and the registry; the shipped rules load and
every query of the Grafana dashboard returns data. Also validates the compose file.

The binaries come from Debian (``prometheus``, ``docker-compose``; ``.ci/run`` installs
them). Without them a developer's run skips these tests; in CI (``CI`` set) they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from mesh import Mesh, Settings
from mesh.dev.stack import free_port
from mesh.runtime.status import observed
from tests.runtime.observability import (
    FAILING,
    SENT,
    add_shipper,
    event_types,
    eventually,
    http_status,
)
from tests.support import read_topic, running

INFRA = Path(__file__).resolve().parents[2] / "infra"
RULES = INFRA / "prometheus" / "rules.yml"
DASHBOARD = INFRA / "grafana" / "dashboards" / "mesh.json"
AGENT = "shipper"


def require(binary: str) -> str:
    """The path of *binary*; a skip on a developer machine without it, a failure in CI."""
    found = shutil.which(binary)
    if found is None:
        message = f"{binary} is not installed (Debian package; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard, variables filled in as Grafana would."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    for variable in dashboard["templating"]["list"]:
        # label_values(metric, label): the metric must have series.
        match = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["query"]["query"])
        assert match, variable
        exprs.append(match.group(1))
    return [e.replace("$__rate_interval", "1m").replace("$agent", AGENT) for e in exprs]


def test_the_dashboard_has_the_panels_the_issue_asks_for() -> None:
    queries = " ".join(dashboard_queries())
    for metric in [
        "mesh_events_handled_total",
        "mesh_events_retried_total",
        "mesh_events_dead_lettered_total",
        "mesh_consumer_lag",
        "mesh_handler_duration_seconds_bucket",
        "mesh_chain_latency_seconds_bucket",
    ]:
        assert metric in queries
    rows = [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] == "row"]
    assert any(row.get("repeat") == "agent" for row in rows)  # one row per agent


def test_promtool_accepts_the_rules_and_the_config() -> None:
    promtool = require("promtool")
    for args in (
        ["check", "rules", str(RULES)],
        ["check", "config", str(RULES.parent / "prometheus.yml")],
    ):
        checked = subprocess.run([promtool, *args], capture_output=True, text=True, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_docker_compose_file_is_valid() -> None:
    compose = require("docker-compose")
    checked = subprocess.run(
        [compose, "-f", str(INFRA / "docker-compose.yml"), "config", "--services"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert set(checked.stdout.split()) == {"kafka", "registry", "worker", "prometheus", "grafana"}


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[list[str], list[str]], str]]:
    """Factory: ``prometheus(worker_targets, registry_targets) -> base URL`` of a server."""
    binary = require("prometheus")
    started: list[subprocess.Popen[bytes]] = []

    def start(workers: list[str], registries: list[str]) -> str:
        config = tmp_path / "prometheus.yml"
        config.write_text(
            json.dumps(  # JSON is YAML
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(RULES)],
                    "scrape_configs": [
                        {"job_name": "mesh-workers", "static_configs": [{"targets": workers}]},
                        {"job_name": "mesh-registry", "static_configs": [{"targets": registries}]},
                    ],
                }
            )
        )
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        started.append(
            subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        base = f"http://127.0.0.1:{port}"
        ready = eventually(http_status(f"{base}/-/ready"), lambda code: code == 200)
        assert ready == 200, (tmp_path / "prometheus.log").read_text()[-2000:]
        return base

    yield start
    for process in started:
        process.terminate()
        process.wait(30)


def test_prometheus_scrapes_mesh_and_every_dashboard_query_returns_data(
    make_app: Callable[..., Mesh],
    mesh_settings: Settings,
    prometheus: Callable[[list[str], list[str]], str],
) -> None:
    Order, Shipped = event_types()
    app = make_app(Order, Shipped)
    add_shipper(app, Order, Shipped)
    port = free_port()
    registry = urlsplit(mesh_settings.registry_url).netloc
    base = prometheus([f"127.0.0.1:{port}"], [registry])

    with (
        observed(app, port=port, host="127.0.0.1", lag_interval_s=1) as metrics,
        running(app, metrics=metrics),
    ):
        for n in range(SENT):
            app.publish(Order(order_id=f"o{n}", n=n))
        read_topic(mesh_settings.bootstrap_servers, Shipped.topic(), SENT - FAILING, partitions=3)
        targets = eventually(
            lambda: httpx.get(f"{base}/api/v1/targets").json()["data"]["activeTargets"],
            lambda ts: len(ts) == 2 and all(t["health"] == "up" for t in ts),
        )
        assert sorted((t["labels"]["job"], t["health"]) for t in targets) == [
            ("mesh-registry", "up"),
            ("mesh-workers", "up"),
        ]
        queries = dashboard_queries()
        missing = eventually(
            lambda: [query for query in queries if not _has_data(base, query)],
            lambda found: not found,
            timeout_s=60,
        )
        groups = httpx.get(f"{base}/api/v1/rules").json()["data"]["groups"]

    # The rule files loaded and evaluate without errors.
    assert {g["name"] for g in groups} == {"mesh.recording", "mesh.alerts"}
    rules = [rule for g in groups for rule in g["rules"]]
    assert len(rules) == 12
    assert [r["name"] for r in rules if r["health"] != "ok"] == []
    # Every dashboard query has data (most of it is recorded by the worker's AgentMetrics).
    assert missing == []


def _has_data(base: str, query: str) -> bool:
    """Whether *query* (which must be valid PromQL) returns at least one series now."""
    answer = httpx.get(f"{base}/api/v1/query", params={"query": query}).json()
    assert answer["status"] == "success", (query, answer)
    return bool(answer["data"]["result"])
