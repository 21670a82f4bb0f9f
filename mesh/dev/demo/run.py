"""``mesh demo``: the research pipeline (:mod:`mesh.dev.demo.research`) under faults, watched
from Kafka.

One run: use the configured cluster or start a fresh embedded broker and registry,
start ``workers`` ``mesh run`` processes, submit ``requests`` research requests (their
ids, prefixed with a run id, are their correlation ids), then watch the topics until
every request has completed or has a dead letter. With ``crash_worker`` one worker is
SIGKILLed mid-run and a fresh one started. ``mesh console`` watches the run on a free
port. Whatever happens, every process the run started is stopped (the embedded stack and
its console are left running with ``keep_stack``).

The agents' policies come from the pipeline's ``mesh.toml`` (timeouts, retries after
1 s and 2 s, which errors are never retried), passed to the workers as ``MESH_AGENTS``;
the offline model's latency and failure rate as ``RESEARCH_MODEL_*``.
"""

from __future__ import annotations

import importlib
import json
import os
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from mesh.config import AgentSettings, Settings
from mesh.dev.demo.watch import RunStatus, RunWatcher
from mesh.dev.demo.workers import WorkerPool
from mesh.dev.stack import DevStack, ManagedProcess, free_port, start_console
from mesh.errors import ConfigError, DevStackError
from mesh.kafka.clients import admin_config
from mesh.runtime.app import Mesh

__all__ = ["APP_SPEC", "DemoOptions", "DemoReport", "run_demo"]

PIPELINE = "mesh.dev.demo.research"
APP_SPEC = f"{PIPELINE}:app"
#: Rebalance in seconds after a SIGKILL (Tansu holds a join for half the session timeout).
FAST_REBALANCE = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500}
_TICK_S = 0.25
#: ``crash_worker`` kills once a quarter of the requests settled, or this long after submitting.
_CRASH_AFTER_S = 8.0
_SETTLE_IDLE_S = 1.0

OnStatus = Callable[[RunStatus], None]
OnNote = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    requests: int = 100
    failure_rate: float = 0.1
    latency_ms: tuple[int, int] = (200, 800)
    workers: int = 3
    crash_worker: bool = False
    #: Bound of the whole run once requests are submitted.
    timeout_s: float = 100.0
    #: Leave the embedded broker and registry running (``mesh dev down --state-dir``).
    keep_stack: bool = False
    state_dir: Path = Path(".mesh/demo")


@dataclass
class DemoReport:
    """How the run went; ``status`` holds what was read back from Kafka."""

    run_id: str
    status: RunStatus
    stack: str
    #: The run started an embedded stack (else it used the configured cluster).
    embedded: bool
    #: The stack still runs after the run (a configured cluster, or ``keep_stack``).
    stack_kept: bool
    settings: Settings | None = None
    elapsed_s: float = 0.0
    killed: list[int] = field(default_factory=list)
    replacements: list[int] = field(default_factory=list)
    timed_out: bool = False
    log_dir: Path = Path(".mesh/demo")
    #: Where ``mesh console`` watched the run (None: it did not start).
    console_url: str | None = None

    @property
    def ok(self) -> bool:
        return self.status.settled

    def trace_example(self) -> str | None:
        """A request worth tracing: one that failed, else the slowest completed one."""
        status = self.status
        if status.failed:
            return min(status.failed)
        if status.completed_ms:
            return max(
                status.completed_ms,
                key=lambda r: status.completed_ms[r] - status.submitted_ms.get(r, 0),
            )
        return None

    def to_json(self) -> dict[str, Any]:
        status = self.status
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "requests": len(status.requests),
            "completed": status.completed,
            "failed": len(status.failed),
            "in_flight": status.in_flight,
            "dead_letters": status.dead_letters,
            "retries": status.retries,
            "handled": status.handled,
            "events": dict(sorted(status.events.items())),
            "latency_ms": {"p50": status.percentile_ms(50), "p99": status.percentile_ms(99)},
            "killed_workers": self.killed,
            "replacement_workers": self.replacements,
            "elapsed_s": round(self.elapsed_s, 2),
            "timed_out": self.timed_out,
            "stack": self.stack,
            "console_url": self.console_url,
        }


def run_demo(
    options: DemoOptions,
    base: Settings,
    *,
    on_status: OnStatus = lambda _status: None,
    on_note: OnNote = lambda _note: None,
) -> DemoReport:
    """Run the demo end to end (blocking); Ctrl-C stops it, and what it started, cleanly."""
    package = _load_pipeline()
    run_id = f"demo-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}"
    submissions = package.submissions(options.requests, run_id=run_id)
    with _stack(base, options, on_note) as (stack_settings, where, embedded):
        config = Path(package.__file__).parent / "mesh.toml"
        settings = _with_agent_policies(stack_settings, config)
        app: Mesh = package.app
        app.settings = settings
        env = _worker_env(settings, options, run_id)
        pool = WorkerPool(APP_SPEC, env=env, log_dir=options.state_dir)
        console = _console(settings, env, options, on_note, kept=embedded and options.keep_stack)
        try:
            pids = pool.start(options.workers)
            on_note(f"started {len(pids)} workers (pids {', '.join(map(str, pids))})")
            app.prepare()  # while the workers start: topics and schemas, as they do it too
            watcher = RunWatcher(
                settings,
                app,
                requests=[e.request_id for e in submissions],
                submitted_topic=package.ResearchSubmitted.topic(),
                completed_topic=package.ReportPublished.topic(),
            )
            report = DemoReport(
                run_id=run_id,
                status=watcher.status,
                stack=where,
                embedded=embedded,
                stack_kept=options.keep_stack or not embedded,
                settings=settings,
                log_dir=options.state_dir,
                console_url=None if console is None else console.url,
            )
            _wait_for_groups(settings, app, timeout_s=20.0)
            started = time.monotonic()
            for event in submissions:
                app.publish(event, correlation_id=event.request_id)
            on_note(f"submitted {len(submissions)} requests (run {run_id})")
            _watch(
                report,
                watcher,
                pool,
                options=options,
                started=started,
                on_status=on_status,
                on_note=on_note,
            )
            report.elapsed_s = time.monotonic() - started
        finally:
            pool.stop()
            app.close()
            if console is not None and not (embedded and options.keep_stack):
                console.stop()
        # The workers are gone: read what they wrote last, so the summary is final.
        _drain(watcher)
        watcher.close()
        on_status(report.status)
    return report


def _watch(
    report: DemoReport,
    watcher: RunWatcher,
    pool: WorkerPool,
    *,
    options: DemoOptions,
    started: float,
    on_status: OnStatus,
    on_note: OnNote,
) -> None:
    """Until every request settled or time is up; kills a worker when asked to."""
    total = options.requests
    reported_exits: set[int] = set()
    while True:
        status = watcher.poll(_TICK_S)
        on_status(status)
        if status.settled:
            return
        elapsed = time.monotonic() - started
        if elapsed > options.timeout_s:
            report.timed_out = True
            on_note(f"gave up after {options.timeout_s:.0f}s: {status.in_flight} still in flight")
            return
        done = status.completed + len(status.failed)
        if (
            options.crash_worker
            and not report.killed
            and status.in_flight > 0
            and (done >= max(1, total // 4) or elapsed > _CRASH_AFTER_S)
        ):
            killed = pool.kill_one()
            report.killed.append(killed)
            report.replacements.extend(pool.start(1))
            on_note(
                f"SIGKILLed worker {killed} with {status.in_flight} requests in flight; "
                f"started worker {report.replacements[-1]}"
            )
        for pid, code in pool.exited():
            if pid not in reported_exits:
                reported_exits.add(pid)
                on_note(f"worker {pid} exited with code {code}; see {options.state_dir}/")


def _drain(watcher: RunWatcher) -> None:
    """Read until the topics have been quiet for a moment."""
    seen = -1
    while seen != (seen := watcher.status.handled + watcher.status.dead_letters):
        watcher.poll(_SETTLE_IDLE_S)


def _load_pipeline() -> ModuleType:
    """The research package, shipped with mesh; its planner needs the ``demo`` extra."""
    try:
        return importlib.import_module(PIPELINE)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"mesh demo needs {exc.name}: install it with `pip install 'mesh-agents[demo]'`"
        ) from None


@contextmanager
def _stack(
    base: Settings, options: DemoOptions, on_note: OnNote
) -> Iterator[tuple[Settings, str, bool]]:
    """(settings, where, embedded): the configured cluster, else a fresh embedded stack.

    Fresh, not the `mesh dev` stack: on Tansu a consumer group whose members all left
    can take minutes to form again, so runs never share groups on an embedded broker.
    The stack lives in ``state_dir`` and is stopped at the end unless ``keep_stack``.
    """
    if "bootstrap_servers" in base.model_fields_set:
        yield base, f"the configured cluster at {base.bootstrap_servers}", False
        return
    stack = DevStack(options.state_dir)
    stack.down()  # a stack an earlier run kept
    on_note("starting an embedded broker and schema registry")
    stack.up(broker_port=free_port(), registry_port=free_port())
    try:
        settings = stack.settings(base)
        yield settings, f"an embedded broker at {settings.bootstrap_servers}", True
    finally:
        if not options.keep_stack:
            stack.down()


def _console(
    settings: Settings, env: dict[str, str], options: DemoOptions, on_note: OnNote, *, kept: bool
) -> ManagedProcess | None:
    """``mesh console --app`` the pipeline on a free port (None if it does not start); when
    *kept*, part of the embedded stack, which ``mesh dev down --state-dir`` stops."""
    try:
        console = start_console(
            bootstrap_servers=settings.bootstrap_servers,
            registry_url=settings.registry_url,
            port=free_port(),
            log_dir=options.state_dir,
            args=["--app", APP_SPEC],
            env=env,
        )
    except DevStackError as exc:
        on_note(f"mesh console did not start ({exc}); the demo runs without it")
        return None
    if kept:
        DevStack(options.state_dir).adopt(console)
    on_note(f"mesh console at {console.url} (read-only)")
    return console


def _with_agent_policies(settings: Settings, config: Path) -> Settings:
    """*settings* with the ``[agents.*]`` policies of the pipeline's ``mesh.toml``."""
    try:
        table = tomllib.loads(config.read_text())["agents"]
        policies = {name: AgentSettings.model_validate(value) for name, value in table.items()}
    except (OSError, KeyError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise ConfigError(f"{config}: {exc}") from None
    return settings.model_copy(update={"agents": {**settings.agents, **policies}})


def _worker_env(settings: Settings, options: DemoOptions, run_id: str) -> dict[str, str]:
    low, high = options.latency_ms
    return {
        **os.environ,
        "MESH_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "MESH_REGISTRY_URL": settings.registry_url,
        "MESH_KAFKA": json.dumps({**settings.kafka, **FAST_REBALANCE}),
        "MESH_AGENTS": json.dumps(
            {name: policy.model_dump(mode="json") for name, policy in settings.agents.items()}
        ),
        "MESH_METRICS_PORT": "0",  # several workers on one host: no /metrics port each
        "RESEARCH_MODEL_LATENCY_MS": f"{low}-{high}",
        "RESEARCH_MODEL_FAILURE_RATE": str(options.failure_rate),
        "RESEARCH_MODEL_SEED": run_id,
    }


def _wait_for_groups(settings: Settings, app: Mesh, *, timeout_s: float) -> None:
    """Until every agent's consumer group is stable (or *timeout_s*: then the records wait)."""
    admin = AdminClient(admin_config(settings))
    groups = [app.group_id(name) for name in app.agents]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        futures = admin.describe_consumer_groups(groups, request_timeout=5)
        try:
            states = [future.result().state for future in futures.values()]
        except Exception:  # a group not known yet
            states = []
        if states and all(state == ConsumerGroupState.STABLE for state in states):
            return
        time.sleep(1.0)
