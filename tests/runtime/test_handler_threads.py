"""Sync handlers that hang past their timeout: Python cannot stop their threads, so mesh
abandons and replaces them, and never lets them starve other events or the shutdown."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Producer

from mesh import Context, Event, Mesh, Settings
from mesh.config import RetryPolicy
from mesh.runtime.metrics import Metrics
from mesh.testing import unique_name
from tests.runtime.test_runtime_delivery import REPO, load_relay, relay_env, show_logs
from tests.support import header, read_topic, running


def test_hung_sync_handlers_never_starve_healthy_events(
    make_app: Callable[..., Mesh], mesh_settings: Settings
) -> None:
    stem = unique_name("hung")

    class Ask(Event, topic=f"{stem}.asks", key="ask_id", name="test.Ask"):
        ask_id: str

    class Answer(Event, topic=f"{stem}.answers", key="ask_id", name="test.Answer"):
        ask_id: str

    app = make_app(Ask, Answer)
    release = threading.Event()

    @app.agent("answerer", consumes=Ask, concurrency=8, timeout="1s", retry=RetryPolicy(attempts=1))
    def answerer(event: Ask, ctx: Context) -> Answer:
        if event.ask_id.startswith("hang"):
            release.wait(120)  # far past the timeout
        return Answer(ask_id=event.ask_id)

    metrics = Metrics()
    dlq = f"{Ask.topic()}.{app.group_id('answerer')}.dlq"
    try:
        with running(app, metrics=metrics):
            for n in range(12):  # more than the 8 threads, and than 8 replacements
                app.publish(Ask(ask_id=f"hang{n}"))
            for n in range(30):
                app.publish(Ask(ask_id=f"ok{n}"))
            answers = read_topic(mesh_settings.bootstrap_servers, Answer.topic(), 30, partitions=3)
            dead = read_topic(mesh_settings.bootstrap_servers, dlq, 12, partitions=3)
            stuck = metrics._threads.stuck if metrics._threads else 0
            degraded = not metrics.ready()
            release.set()
            deadline = time.monotonic() + 10
            while metrics._threads is not None and metrics._threads.stuck:
                assert time.monotonic() < deadline, "stuck threads never came back"
                time.sleep(0.1)
            recovered = metrics.ready()
    finally:
        release.set()

    assert sorted(m.key() for m in answers) == sorted(f"ok{n}".encode() for n in range(30))
    assert sorted(m.key() for m in dead) == sorted(f"hang{n}".encode() for n in range(12))
    assert {header(m, "mesh.error.kind") for m in dead} == {"timeout"}
    assert stuck == 12  # bounded: 8 replaced, 4 more run on with their slots
    assert degraded
    assert recovered


def test_sigterm_exits_while_sync_handlers_hang(mesh_settings: Settings, tmp_path: Path) -> None:
    prefix = unique_name("relay")
    env = relay_env(mesh_settings, prefix, tmp_path / "schemas")
    relay = load_relay(prefix, tmp_path / "schemas")
    log = tmp_path / "hung.log"
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "mesh", "run", "tests.apps.hung:app"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        time.sleep(2)  # joined the group before the jobs arrive
        producer = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
        serde = Mesh("feeder", settings=mesh_settings)._get_serde()
        for n in range(6):
            job = relay.Job(job_id=f"hang{n}")
            producer.produce(relay.Job.topic(), serde.encode(job, relay.Job.topic()), b"%d" % n)
        assert producer.flush(10) == 0
        dlq = f"{relay.Job.topic()}.{prefix}-hung.hung.dlq"
        read_topic(mesh_settings.bootstrap_servers, dlq, 6, partitions=4, timeout_s=60)
        worker.send_signal(signal.SIGTERM)
        began = time.monotonic()
        code = worker.wait(timeout=40)
        took = time.monotonic() - began
    except BaseException:
        show_logs(tmp_path)
        raise
    finally:
        if worker.poll() is None:
            worker.kill()
    assert code == 0, log.read_text()
    assert took < 35  # the drain bound (30 s) and then some, not the 600 s of the calls
