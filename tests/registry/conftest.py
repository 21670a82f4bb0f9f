"""Fixtures for the schema registry tests: clients, raw HTTP, private registries per topic."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from mesh.dev.stack import ManagedProcess, free_port, start_registry
from mesh.testing import unique_name


@pytest.fixture
def new_client(mesh_registry_url: str) -> Callable[[], SchemaRegistryClient]:
    """Factory of clients with empty caches (a client's cache hides the registry's answers)."""
    return lambda: SchemaRegistryClient({"url": mesh_registry_url})


@pytest.fixture
def client(new_client: Callable[[], SchemaRegistryClient]) -> SchemaRegistryClient:
    return new_client()


@pytest.fixture
def http(mesh_registry_url: str) -> Iterator[httpx.Client]:
    """Raw HTTP to the session's registry, for status codes and error bodies."""
    with httpx.Client(base_url=mesh_registry_url, timeout=30) as session:
        yield session


@pytest.fixture
def subject() -> str:
    return unique_name("subject")


@pytest.fixture
def start_registry_on(
    mesh_bootstrap_servers: str, tmp_path: Path
) -> Iterator[Callable[[str], ManagedProcess]]:
    """Factory: ``start_registry_on(topic)`` runs one more registry process on *topic*."""
    started: list[ManagedProcess] = []

    def start(topic: str) -> ManagedProcess:
        process = start_registry(
            bootstrap_servers=mesh_bootstrap_servers,
            port=free_port(),
            log_dir=tmp_path / f"registry-{len(started)}",
            topic=topic,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture
def snapshot() -> Callable[[str], dict[str, Any]]:
    """``snapshot(url)``: everything a registry serves, soft-deleted versions included."""

    def take(url: str) -> dict[str, Any]:
        with httpx.Client(base_url=url, timeout=30) as http:
            subjects = http.get("/subjects", params={"deleted": "true"}).json()
            state: dict[str, Any] = {
                "subjects": subjects,
                "live": http.get("/subjects").json(),
                "config": http.get("/config").json(),
                "mode": http.get("/mode").json(),
            }
            ids = set()
            for subject in subjects:
                base = f"/subjects/{quote(subject, safe='')}/versions"
                versions = http.get(base, params={"deleted": "true"}).json()
                entries = [
                    http.get(f"{base}/{v}", params={"deleted": "true"}).json() for v in versions
                ]
                ids |= {entry["id"] for entry in entries}
                config = http.get(f"/config/{quote(subject, safe='')}")
                state[subject] = {"versions": entries, "config": config.json()}
            state["ids"] = {i: http.get(f"/schemas/ids/{i}").json() for i in sorted(ids)}
            return state

    return take


@pytest.fixture
def eventually() -> Callable[..., None]:
    """``eventually(check)``: wait until *check()* is true (another registry lags a little)."""

    def wait(check: Callable[[], bool], timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout_s}s")
            time.sleep(0.05)

    return wait
