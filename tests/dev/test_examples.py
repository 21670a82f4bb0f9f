"""The example agents in agents/ run, and schemas/ matches their models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from mesh import Settings
from mesh.schema.files import find_event_types, generate_schemas
from tests.support import read_topic

REPO = Path(__file__).resolve().parents[2]


def test_schemas_dir_matches_the_example_models() -> None:
    results = generate_schemas(find_event_types(["agents"]), REPO / "schemas", check=True)
    assert results
    assert all(r.state == "unchanged" for r in results), [(r.path, r.state) for r in results]


def test_hello_agent_answers_through_mesh_run_and_publish(mesh_settings: Settings) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "MESH_BOOTSTRAP_SERVERS": mesh_settings.bootstrap_servers,
        "MESH_REGISTRY_URL": mesh_settings.registry_url,
        "MESH_KAFKA": '{"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}',
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "mesh", "run", "agents.hello:app"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        published = subprocess.run(
            [sys.executable, "-m", "mesh", "publish", "agents.hello:Question", "--data",
             '{"question_id": "q-42", "text": "ping?"}'],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        answers = read_topic(mesh_settings.bootstrap_servers, "answers", 1, partitions=3)
        assert any(m.key() == b"q-42" for m in answers)
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
    assert code == 0, worker.stderr.read().decode() if worker.stderr else code
