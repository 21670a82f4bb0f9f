"""`mesh dev smoke`: a round trip through the session's stack, and a fast failure without one."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from mesh.dev.stack import free_port


def _smoke(tmp_path: Path, bootstrap: str, registry: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESH_BOOTSTRAP_SERVERS": bootstrap, "MESH_REGISTRY_URL": registry}
    return subprocess.run(
        [sys.executable, "-m", "mesh", "dev", "smoke", "--count", "20"],
        cwd=tmp_path,
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_smoke_passes_against_the_session_stack(
    tmp_path: Path, mesh_bootstrap_servers: str, mesh_registry_url: str
):
    result = _smoke(tmp_path, mesh_bootstrap_servers, mesh_registry_url)
    assert result.returncode == 0, result.stderr
    assert "smoke test passed" in result.stdout
    assert "20 published, read back and verified" in result.stdout
    assert "round trip" in result.stdout


def test_smoke_fails_fast_with_one_line_when_the_broker_is_down(
    tmp_path: Path, mesh_registry_url: str
):
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = _smoke(tmp_path, dead, mesh_registry_url)
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: broker {dead} not reachable: run `mesh dev up`"), line


def test_smoke_fails_fast_when_the_registry_is_down(tmp_path: Path, mesh_bootstrap_servers: str):
    dead = f"http://127.0.0.1:{free_port()}"
    result = _smoke(tmp_path, mesh_bootstrap_servers, dead)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: registry {dead} not reachable"), line
