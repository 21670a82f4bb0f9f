"""``mesh run --processes N``: a supervisor and its workers, run as a user runs them."""

from __future__ import annotations

import importlib
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from mesh import Mesh, Settings
from mesh.config import TopicDefaults
from mesh.dev.stack import free_port
from mesh.dev.supervisor import merge_families
from mesh.schema.files import generate_schemas
from mesh.serde import Serde
from mesh.testing import FAST_GROUP_CONFIG, unique_name
from tests.runtime.observability import Samples, eventually, http_status, scrape, total
from tests.support import committed_offsets, read_topic

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 4


@dataclass
class Supervised:
    """A running ``mesh run tests.apps.supervised:app --processes N``."""

    process: subprocess.Popen[bytes]
    app: ModuleType
    settings: Settings
    serde: Serde
    base: str
    log: Path

    def metrics(self) -> Samples:
        return scrape(f"{self.base}/metrics")

    def wait_ready(self) -> None:
        ready = eventually(http_status(f"{self.base}/readyz"), lambda c: c == 200, timeout_s=60)
        assert ready == 200, self.log.read_text()[-5000:]

    def publish(self, ids: range, *, then: Callable[[int], None] | None = None) -> None:
        producer = Producer({"bootstrap.servers": self.settings.bootstrap_servers})
        topic = self.app.Job.topic()
        for i in ids:
            job = self.app.Job(job_id=f"job-{i}")
            producer.produce(topic, self.serde.encode(job, topic), job.job_id.encode())
            if then is not None:
                then(i)
        assert producer.flush(10) == 0

    def done(self, total: int) -> dict[str, set[int]]:
        """Job id -> the worker pids that handled it, once all *total* jobs are there."""
        count = total
        while True:  # duplicates are allowed (at-least-once); gaps are not
            records = read_topic(
                self.settings.bootstrap_servers,
                self.app.JobDone.topic(),
                count,
                partitions=PARTITIONS,
                timeout_s=120,
            )
            handled: dict[str, set[int]] = {}
            for record in records:
                done = self.serde.decode(record.value(), self.app.JobDone)
                handled.setdefault(done.job_id, set()).add(done.worker)
            if len(handled) >= total:
                return handled
            count = len(records) + total - len(handled)

    def committed(self) -> int:
        """The sum of the group's committed offsets over the jobs topic's partitions."""
        admin = AdminClient({"bootstrap.servers": self.settings.bootstrap_servers})
        offsets = committed_offsets(admin, self.app.app.group_id("relay"), self.app.Job.topic())
        return sum(max(0, offset) for offset in offsets.values())

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(90)


@pytest.fixture
def supervised(mesh_settings: Settings, tmp_path: Path) -> Iterator[Callable[..., Supervised]]:
    """Factory: ``supervised(*args, **env)`` starts the supervisor with *args* after
    ``--processes 2``, its own topics, and *env* added to its environment."""
    started: list[Supervised] = []

    def start(*args: str, **env: str) -> Supervised:
        prefix = unique_name("sup")
        schemas = tmp_path / "schemas"
        app = load_app(prefix, schemas)
        port = free_port()
        environment = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "SUPERVISED_PREFIX": prefix,
            "SUPERVISED_SCHEMAS": str(schemas),
            "MESH_BOOTSTRAP_SERVERS": mesh_settings.bootstrap_servers,
            "MESH_REGISTRY_URL": mesh_settings.registry_url,
            "MESH_TOPICS__PARTITIONS": str(PARTITIONS),
            "MESH_KAFKA": json.dumps(FAST_GROUP_CONFIG),
            "MESH_METRICS_HOST": "127.0.0.1",
            **env,
        }
        log = tmp_path / f"{prefix}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "mesh", "run", "tests.apps.supervised:app",
                 "--processes", "2", "--metrics-port", str(port), *args],
                cwd=REPO, env=environment, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        settings = mesh_settings.model_copy(update={"topics": TopicDefaults(partitions=PARTITIONS)})
        serde = Mesh("feeder", settings=settings)._get_serde()
        running = Supervised(process, app, settings, serde, f"http://127.0.0.1:{port}", log)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()
        print(f"----- {running.log.name}\n{running.log.read_text(errors='replace')[-20_000:]}")


def load_app(prefix: str, schemas: Path) -> ModuleType:
    """The supervised app module with this test's topics, its schemas written to *schemas*."""
    os.environ["SUPERVISED_PREFIX"] = prefix
    try:
        sys.modules.pop("tests.apps.supervised", None)
        module = importlib.import_module("tests.apps.supervised")
    finally:
        del os.environ["SUPERVISED_PREFIX"]
    generate_schemas([module.Job, module.JobDone], schemas)
    return module


def assigned(samples: Samples, worker: str) -> float:
    return total(samples, "mesh_assigned_partitions", agent="relay", worker=worker)


def test_two_workers_share_the_partitions_and_serve_merged_metrics(
    supervised: Callable[..., Supervised],
) -> None:
    run = supervised()
    run.wait_ready()
    samples = run.metrics()
    # Both workers hold partitions of the one group.
    assert assigned(samples, "0") > 0, samples
    assert assigned(samples, "1") > 0, samples
    jobs = 2000
    run.publish(range(jobs))
    handled = run.done(jobs)
    assert set(handled) == {f"job-{i}" for i in range(jobs)}
    assert len(set().union(*handled.values())) == 2  # two worker processes did the work
    committed = eventually(run.committed, lambda n: n == jobs)
    assert committed == jobs
    # /metrics: each worker's samples, labelled; every family rendered once.
    ok = "mesh_events_handled_total"
    samples = eventually(
        run.metrics, lambda s: total(s, ok, agent="relay", outcome="ok") >= jobs, timeout_s=10
    )
    by_worker = [total(samples, ok, agent="relay", outcome="ok", worker=w) for w in "01"]
    assert all(n > 0 for n in by_worker), by_worker
    assert sum(by_worker) >= jobs
    assert total(samples, "mesh_worker_up", worker="0") == 1
    assert total(samples, "mesh_worker_up", worker="1") == 1
    assert total(samples, "mesh_worker_restarts_total") == 0
    assert total(samples, "mesh_ready", worker="0") == total(samples, "mesh_ready", worker="1") == 1
    text = httpx.get(f"{run.base}/metrics").text
    assert text.count("# TYPE mesh_events_handled_total counter") == 1, text
    assert httpx.get(f"{run.base}/healthz").status_code == 200
    assert run.stop() == 0


def test_kill_9_of_a_worker_restarts_it_and_loses_nothing(
    supervised: Callable[..., Supervised],
) -> None:
    run = supervised()
    run.wait_ready()
    jobs = 5000
    killed: list[int] = []

    def kill_one(i: int) -> None:
        if i == jobs // 5:  # mid-stream: once outputs flow, kill -9 the worker of one
            first, *_ = read_topic(
                run.settings.bootstrap_servers, run.app.JobDone.topic(), 200, partitions=PARTITIONS
            )
            pid = run.serde.decode(first.value(), run.app.JobDone).worker
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    run.publish(range(jobs), then=kill_one)
    handled = run.done(jobs)
    assert set(handled) == {f"job-{i}" for i in range(jobs)}
    committed = eventually(run.committed, lambda n: n == jobs, timeout_s=60)
    assert committed == jobs
    assert "was killed by SIGKILL: restarting" in run.log.read_text()
    run.wait_ready()  # the restarted worker holds partitions again...
    assert total(run.metrics(), "mesh_worker_restarts_total") == 1
    run.publish(range(jobs, jobs + 500))  # ...and works
    handled = run.done(jobs + 500)
    assert set(handled) == {f"job-{i}" for i in range(jobs + 500)}
    before = set().union(*(handled[f"job-{i}"] for i in range(jobs)))
    after = set().union(*(handled[f"job-{i}"] for i in range(jobs, jobs + 500)))
    assert killed[0] in before, before
    assert len(after) == 2, after
    assert killed[0] not in after, after
    assert len(before | after) == 3  # the survivor, the killed worker, its replacement
    assert eventually(run.committed, lambda n: n == jobs + 500) == jobs + 500
    assert run.stop() == 0


def test_sigterm_drains_the_workers_in_flight_events_then_exits_0(
    supervised: Callable[..., Supervised],
) -> None:
    run = supervised(SUPERVISED_SLEEP_S="4")
    run.wait_ready()
    jobs = 300
    run.publish(range(jobs))
    # Every job is in a handler (4 s each) when the supervisor is told to stop.
    samples = eventually(
        run.metrics, lambda s: total(s, "mesh_events_in_flight") == jobs, timeout_s=20
    )
    assert total(samples, "mesh_events_in_flight") == jobs
    assert run.committed() == 0
    assert run.stop() == 0
    # The workers finished them all before leaving, and committed.
    handled = run.done(jobs)
    assert set(handled) == {f"job-{i}" for i in range(jobs)}
    assert run.committed() == jobs
    for pid in set().union(*handled.values()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # no worker outlives its supervisor
    assert "was killed" not in run.log.read_text()


def test_workers_whose_supervisor_is_killed_drain_and_exit(
    supervised: Callable[..., Supervised],
) -> None:
    run = supervised()
    run.wait_ready()
    started = re.findall(r"worker \d started \(pid (\d+)\)", run.log.read_text())
    workers = [int(pid) for pid in started]
    assert len(workers) == 2, run.log.read_text()
    run.process.send_signal(signal.SIGKILL)
    assert run.process.wait(10) == -signal.SIGKILL
    left = eventually(lambda: [p for p in workers if alive(p)], lambda ps: not ps, timeout_s=60)
    assert not left, run.log.read_text()
    assert run.log.read_text().count("the supervisor is gone: stopping") == 2


def alive(pid: int) -> bool:
    """Whether *pid* runs (a zombie waiting for its reaper does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status


def test_a_crash_loop_is_given_up_with_exit_1(supervised: Callable[..., Supervised]) -> None:
    run = supervised(SUPERVISED_CRASH="1")  # every worker dies as it starts
    assert run.process.wait(90) == 1
    log = run.log.read_text()
    assert "exited with code 3: restarting in 0.5 s" in log
    assert "5 exits within 60 s, a crash loop: giving up" in log


def test_a_worker_s_configuration_error_is_given_up_at_once_with_exit_2(
    supervised: Callable[..., Supervised],
) -> None:
    run = supervised("--agent", "nosuch")
    assert run.process.wait(60) == 2
    log = run.log.read_text()
    assert "has no agent 'nosuch'" in log
    assert "restarting" not in log


def test_merged_families_are_rendered_once_with_a_worker_label() -> None:
    text = (
        "# HELP mesh_events_consumed_total Records polled.\n"
        "# TYPE mesh_events_consumed_total counter\n"
        'mesh_events_consumed_total{agent="a",topic="t"} 3.0\n'
        "# HELP mesh_ready Ready.\n"
        "# TYPE mesh_ready gauge\n"
        "mesh_ready 1.0\n"
    )
    families = merge_families([("0", text), ("1", text.replace("3.0", "4.0"))])
    assert [(f.name, f.type) for f in families] == [
        ("mesh_events_consumed", "counter"),
        ("mesh_ready", "gauge"),
    ]
    consumed = [(s.name, s.labels, s.value) for s in families[0].samples]
    assert consumed == [
        ("mesh_events_consumed_total", {"agent": "a", "topic": "t", "worker": "0"}, 3.0),
        ("mesh_events_consumed_total", {"agent": "a", "topic": "t", "worker": "1"}, 4.0),
    ]
