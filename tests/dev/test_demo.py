"""`mesh demo`: the research pipeline under injected faults and a SIGKILLed worker loses nothing.

The demo's summary is checked against what this test reads back from Kafka by itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from mesh import Settings
from mesh.kafka.clients import admin_config
from mesh.kafka.topics import existing_topics
from mesh.testing import unique_name
from tests.support import mesh_env

#: `mesh demo` starts the embedded stack itself.
pytestmark = pytest.mark.tansu_only

REQUESTS = 12


def read_run(settings: Settings, run_id: str) -> dict[str, list[dict[str, str]]]:
    """Headers of every record of the run, by topic: the research topics, retries, dead letters."""
    sizes = existing_topics(AdminClient(admin_config(settings)))
    topics = {t: n for t, n in sizes.items() if t.startswith("research.")}
    consumer = Consumer(
        settings.kafka_config(
            **{"group.id": unique_name("demo-check"), "enable.auto.commit": False}
        )
    )
    consumer.assign(
        [TopicPartition(t, p, OFFSET_BEGINNING) for t, n in topics.items() for p in range(n)]
    )
    found: dict[str, list[dict[str, str]]] = {}
    idle = 0
    try:
        while idle < 3:
            batch = consumer.consume(1000, timeout=1.0)
            idle = 0 if batch else idle + 1
            for msg in batch:
                headers = {k: v.decode() for k, v in msg.headers() or () if v is not None}
                if headers.get("mesh.correlation-id", "").startswith(run_id):
                    found.setdefault(msg.topic(), []).append(headers)
    finally:
        consumer.close()
    return found


def test_demo_from_an_empty_directory_with_a_crashed_worker_accounts_for_every_request(
    mesh_settings: Settings, tmp_path: Path
) -> None:
    """The pipeline, its schemas and its policies ship in the package: no checkout needed."""
    env = {
        **os.environ,
        "MESH_BOOTSTRAP_SERVERS": mesh_settings.bootstrap_servers,
        "MESH_REGISTRY_URL": mesh_settings.registry_url,
    }
    env.pop("PYTHONPATH", None)
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "mesh", "demo", "--requests", str(REQUESTS), "--workers", "2",
         "--failure-rate", "0.15", "--crash-worker", "--json"],
        cwd=empty, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in empty.iterdir()) == [".mesh"]  # only the worker logs
    summary = json.loads(done.stdout)
    assert summary["ok"] is True
    assert summary["killed_workers"]
    assert summary["replacement_workers"]
    assert "SIGKILLed worker" in done.stderr
    console_url = summary["console_url"]
    assert console_url.startswith("http://127.0.0.1:")
    assert f"mesh console at {console_url} (read-only)" in done.stderr
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        urllib.request.urlopen(console_url, timeout=5)  # stopped with the demo

    records = read_run(mesh_settings, summary["run_id"])
    submitted = {h["mesh.correlation-id"] for h in records["research.submissions"]}
    completed = {h["mesh.correlation-id"] for h in records.get("research.reports", [])}
    dead = [h for t, hs in records.items() if t.endswith(".dlq") for h in hs]
    failed = {h["mesh.correlation-id"] for h in dead} - completed
    retries = sum(len(hs) for t, hs in records.items() if ".retry." in t)
    events = Counter(
        h["mesh.event-type"]
        for t, hs in records.items()
        if not (t.endswith(".dlq") or ".retry." in t)
        for h in hs
    )
    assert len(submitted) == REQUESTS
    assert completed | failed == submitted  # nothing lost: done, or in a dead-letter topic
    assert summary["requests"] == REQUESTS
    assert summary["completed"] == len(completed)
    assert summary["failed"] == len(failed)
    assert summary["dead_letters"] == len(dead)
    assert summary["retries"] == retries
    assert summary["events"] == dict(events)
    assert summary["in_flight"] == 0
    assert summary["retries"] > 0  # the injected faults were retried through retry topics
    p50, p99 = summary["latency_ms"]["p50"], summary["latency_ms"]["p99"]
    assert completed
    assert 0 < p50 <= p99


def test_demo_keep_stack_keeps_its_console_until_dev_down(tmp_path: Path) -> None:
    """On a fresh embedded stack (no cluster configured), named by -b nowhere."""
    env = mesh_env()
    env.pop("PYTHONPATH", None)

    def mesh(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mesh", *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240, check=False,
        )  # fmt: skip

    done = mesh("demo", "--requests", "2", "--workers", "1", "--failure-rate", "0",
                "--keep-stack", "--json")  # fmt: skip
    try:
        assert done.returncode == 0, done.stderr[-3000:]
        summary = json.loads(done.stdout)
        console_url = summary["console_url"]
        assert f"mesh console at {console_url}" in done.stderr
        with urllib.request.urlopen(console_url, timeout=30) as answer:
            page = answer.read().decode()
        assert 'href="/agents/planner"' in page  # the pipeline's agents, by its app
        assert summary["stack"].removeprefix("an embedded broker at ") in page
    finally:
        down = mesh("dev", "down", "--state-dir", ".mesh/demo")
    assert down.returncode == 0, down.stderr
    assert "stopped console" in down.stdout
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        urllib.request.urlopen(console_url, timeout=5)


def test_demo_refuses_bad_input_with_exit_code_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mesh", "demo", "--latency-ms", "800-200"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--latency-ms" in done.stderr
