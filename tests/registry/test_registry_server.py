"""A registry of its own: global config and mode, basic auth, and CLI errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError

from mesh.dev.stack import LOCALHOST, ManagedProcess
from mesh.testing import unique_name

StartRegistry = Callable[[str], ManagedProcess]
INT = json.dumps({"type": "record", "name": "E", "fields": [{"name": "a", "type": "int"}]})


def test_global_config_and_mode(start_registry_on: StartRegistry) -> None:
    registry = start_registry_on(unique_name("_schemas"))
    http = httpx.Client(base_url=registry.url, timeout=30)
    assert http.get("/config").json() == {"compatibilityLevel": "BACKWARD"}
    assert http.put("/config", json={"compatibility": "full"}).json() == {"compatibility": "FULL"}
    assert http.get("/config").json() == {"compatibilityLevel": "FULL"}
    assert http.get("/config/s", params={"defaultToGlobal": "true"}).json() == {
        "compatibilityLevel": "FULL"
    }
    assert http.delete("/config").json() == {"compatibilityLevel": "FULL"}
    assert http.get("/config").json() == {"compatibilityLevel": "BACKWARD"}

    assert http.put("/mode", json={"mode": "READONLY"}).json() == {"mode": "READONLY"}
    refused = http.post("/subjects/s/versions", json={"schema": INT})
    assert (refused.status_code, refused.json()["error_code"]) == (422, 42205)
    assert http.put("/config", json={"compatibility": "NONE"}).json()["error_code"] == 42205

    assert http.put("/mode", json={"mode": "IMPORT"}).json() == {"mode": "IMPORT"}
    imported = http.post("/subjects/s/versions", json={"schema": INT, "id": 100, "version": 7})
    assert imported.json() == {"id": 100}
    assert http.get("/subjects/s/versions/7").json()["id"] == 100
    assert http.put("/mode", json={"mode": "READWRITE"}).json() == {"mode": "READWRITE"}
    other = json.dumps({"type": "record", "name": "F", "fields": [{"name": "b", "type": "int"}]})
    assert http.post("/subjects/t/versions", json={"schema": other}).json() == {"id": 101}


def test_basic_auth(start_registry_on: StartRegistry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_REGISTRY_BASIC_AUTH", "alice:s3cret-pw")
    registry = start_registry_on(unique_name("_schemas"))
    assert httpx.get(f"{registry.url}/").status_code == 200  # readiness needs no credentials
    for auth in (None, ("alice", "wrong"), ("bob", "s3cret-pw")):
        response = httpx.get(f"{registry.url}/subjects", auth=auth)
        assert (response.status_code, response.json()["error_code"]) == (401, 401)
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    with pytest.raises(SchemaRegistryError):
        SchemaRegistryClient({"url": registry.url}).get_subjects()
    client = SchemaRegistryClient({"url": registry.url, "basic.auth.user.info": "alice:s3cret-pw"})
    assert client.register_schema("s", Schema(INT, "AVRO")) == 1
    assert client.get_subjects() == ["s"]
    assert "s3cret-pw" not in registry.log_path.read_text()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesh", "registry", "serve", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_errors_are_one_line(mesh_bootstrap_servers: str, mesh_registry_url: str) -> None:
    busy_port = mesh_registry_url.rsplit(":", 1)[1]
    busy = run_cli(
        "--bootstrap-servers", mesh_bootstrap_servers, "--host", LOCALHOST, "--port", busy_port
    )
    assert busy.returncode == 1
    [line] = [line for line in busy.stderr.splitlines() if line.startswith("error:")]
    assert f"cannot listen on {LOCALHOST}:{busy_port}" in line
    assert "Traceback" not in busy.stderr
    bad_auth = run_cli("--basic-auth", "no-colon")
    assert (bad_auth.returncode, bad_auth.stderr.strip()) == (
        2,  # a configuration error, like any other
        "error: --basic-auth must be 'user:password'",
    )


def test_a_malformed_http_request_is_answered_400_and_logged_as_one_warning(
    start_registry_on: StartRegistry, eventually: Callable[..., None]
) -> None:
    registry = start_registry_on(unique_name("_schemas"))
    with socket.create_connection((LOCALHOST, registry.port), timeout=10) as sock:
        sock.sendall(b"GET /subjects HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        assert b" 400 Bad Request\r\n" in sock.recv(1024)

    def logged() -> list[str]:
        lines = registry.log_path.read_text().splitlines()
        return [line for line in lines if "malformed HTTP request" in line]

    eventually(lambda: logged() != [])
    [line] = logged()
    assert " WARNING " in line
    assert "Content-Length" in line
    log = registry.log_path.read_text()
    assert "Traceback" not in log
    assert " ERROR " not in log
