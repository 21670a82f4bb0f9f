"""``mesh console`` as a user starts it: a process on 127.0.0.1 that prints its URL."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import mesh.cli
from mesh import Settings
from mesh.dev.stack import free_port
from tests.support import mesh_env


def test_mesh_console_listens_on_localhost_by_default_and_prints_its_url(
    mesh_settings: Settings, tmp_path: Path
) -> None:
    """The cluster named by -b and --registry-url, as every client command takes them."""
    port = free_port()
    env = mesh_env()
    cluster = ["-b", mesh_settings.bootstrap_servers, "--registry-url", mesh_settings.registry_url]
    process = subprocess.Popen(
        [sys.executable, "-m", "mesh", "console", "--port", str(port), *cluster],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert f"mesh console on http://127.0.0.1:{port}/ (read-only;" in line
        answer = _get_when_listening(f"http://127.0.0.1:{port}/")
        assert answer.status_code == 200
        assert "every mesh group on the cluster" in answer.text
        assert f"broker {mesh_settings.bootstrap_servers}" in answer.text
        assert f"registry {mesh_settings.registry_url}" in answer.text
        assert "read-only" in answer.text
    finally:
        process.terminate()
        process.wait(30)


def test_mesh_console_refuses_auth_without_a_password() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "console", "--auth", "just-a-user"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--auth: use USER:PASSWORD" in result.stderr


@pytest.mark.parametrize("command", ["console", "demo"])
def test_console_and_demo_take_the_client_options(command: str) -> None:
    shown = CliRunner().invoke(mesh.cli.app, [command, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.stdout.split())
    assert "--bootstrap-servers -b" in text
    assert "--registry-url" in text
    assert "--config -c" in text
    if command == "console":
        assert "--app" in text
        assert "env var: MESH_APP" in text


def _get_when_listening(url: str) -> httpx.Response:
    """The answer to GET *url*, once the server listens (it prints its URL first)."""
    for _ in range(600):
        try:
            return httpx.get(url, timeout=30)
        except httpx.ConnectError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {url}")
