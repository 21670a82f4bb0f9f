"""Ids stay unique when a broker stalls mid-write, and a lagging registry still finds new ids."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mesh.dev.stack import ManagedProcess, free_port, start_broker, start_registry
from mesh.testing import unique_name

Snapshot = Callable[[str], dict[str, Any]]
Eventually = Callable[..., None]


def schema_text(n: int) -> str:
    fields = [{"name": f"f{n}", "type": "long", "default": n}]
    return json.dumps({"type": "record", "name": f"R{n}", "fields": fields})


def is_primary(registry: ManagedProcess) -> bool:
    return "this registry is the primary" in registry.log_path.read_text()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[ManagedProcess]:
    """A broker of this test alone: stopping it stalls nobody else."""
    broker = start_broker(port=free_port(), log_dir=tmp_path / "broker")
    yield broker
    os.kill(broker.pid, signal.SIGCONT)  # never leave it stopped
    broker.stop()


@pytest.fixture
def registries_on(
    tmp_path: Path, eventually: Eventually
) -> Iterator[Callable[[ManagedProcess], list[ManagedProcess]]]:
    """``registries_on(broker)``: two registries with a 1 s write timeout, the first primary."""
    started: list[ManagedProcess] = []

    def start(broker: ManagedProcess) -> list[ManagedProcess]:
        for n in range(2):
            started.append(
                start_registry(
                    bootstrap_servers=broker.url,
                    port=free_port(),
                    log_dir=tmp_path / f"registry-{n}",
                    write_timeout_s=1.0,
                )
            )
            if n == 0:
                eventually(lambda: is_primary(started[0]))
        return started

    yield start
    for process in started:
        process.stop()


def register(url: str, subject: str, n: int) -> httpx.Response:
    return httpx.post(
        f"{url}/subjects/{subject}/versions", json={"schema": schema_text(n)}, timeout=30
    )


@pytest.mark.tansu_only  # stalls a private embedded broker with SIGSTOP
def test_ids_are_never_reused_when_a_stalled_broker_resumes_late_writes(
    private_broker: ManagedProcess,
    registries_on: Callable[[ManagedProcess], list[ManagedProcess]],
    snapshot: Snapshot,
    eventually: Eventually,
) -> None:
    primary, other = registries_on(private_broker)
    assert register(primary.url, "before", 0).status_code == 200

    os.kill(private_broker.pid, signal.SIGSTOP)
    try:  # both writes time out, their records still on their way to the broker
        assert register(primary.url, "stalled-a", 1).status_code == 500
        assert register(primary.url, "stalled-b", 2).status_code == 500
    finally:
        os.kill(private_broker.pid, signal.SIGCONT)

    def registered(url: str, subject: str, n: int) -> bool:
        return register(url, subject, n).status_code == 200

    for n in range(3, 7):
        eventually(lambda n=n: registered((primary, other)[n % 2].url, f"after-{n}", n), 30)

    def every_id_is_one_schema(url: str) -> dict[str, Any]:
        state = snapshot(url)
        versions = [entry for subject in state["subjects"] for entry in state[subject]["versions"]]
        for entry in versions:
            assert state["ids"][entry["id"]]["schema"] == entry["schema"], entry
        ids_by_text: dict[str, set[int]] = {}
        for entry in versions:
            ids_by_text.setdefault(entry["schema"], set()).add(entry["id"])
        assert sorted(len(ids) for ids in ids_by_text.values()) == [1] * len(ids_by_text)
        return state

    time.sleep(1.0)  # time for any late record to land
    eventually(lambda: snapshot(primary.url) == snapshot(other.url))
    assert every_id_is_one_schema(primary.url) == every_id_is_one_schema(other.url)


@pytest.mark.tansu_only  # the lag comes from the embedded broker's late fetch answers
def test_a_lagging_registry_answers_a_new_id_instead_of_404(
    start_registry_on: Callable[[str], ManagedProcess],
    eventually: Eventually,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = unique_name("_schemas")
    first = start_registry_on(topic)
    eventually(lambda: is_primary(first))
    # without the embedded broker's tuning this reader waits up to 500 ms per fetch
    # (librdkafka's default), and this broker answers a waiting fetch only when it ends
    monkeypatch.setenv("MESH_BROKER", "kafka")
    lagging = start_registry_on(topic)
    for n in range(10):
        response = register(first.url, f"subject-{n}", n)
        assert response.status_code == 200
        found = httpx.get(f"{lagging.url}/schemas/ids/{response.json()['id']}", timeout=30)
        assert found.status_code == 200, found.text
        assert json.loads(found.json()["schema"]) == json.loads(schema_text(n))
    missing = httpx.get(f"{lagging.url}/schemas/ids/{2**31 - 1}", timeout=30)
    assert (missing.status_code, missing.json()["error_code"]) == (404, 40403)
