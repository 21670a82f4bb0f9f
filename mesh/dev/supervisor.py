"""``mesh run --processes N``: N worker processes of one app under a supervisor.

The supervisor starts each worker with multiprocessing's *spawn* method (a fresh
interpreter: no inherited event loop, no librdkafka threads, which never survive a fork),
before and after it has created any client. Every worker runs the whole app as a plain
``mesh run`` does: same agents, same consumer groups, so the workers share each group's
partitions. The supervisor

- restarts a worker that exits unasked (non-zero, killed by a signal, even 0) after a
  short backoff (0.5 s, doubling up to 10 s), and gives up, stopping the others, when one
  worker slot exits 5 times within 60 s (a crash loop) or exits with 2 (a configuration
  or schema error, the same at every restart);
- forwards SIGTERM and SIGINT to the workers and waits for their drain (in-flight events
  finish, offsets are committed), then exits 0; non-zero when it gave up or a worker
  did not stop cleanly;
- serves ``/metrics``, ``/healthz`` and ``/readyz`` on the metrics port: each worker
  serves its own on a private loopback port, and a scrape of the supervisor merges the
  workers' families, each sample labelled ``worker="0".."N-1"``. ``/readyz`` is ready
  when every worker's is.

Workers run in process groups of their own, so a terminal's Ctrl-C reaches the
supervisor only, which forwards it once; a worker whose supervisor dies (kill -9) drains
and exits by itself.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from mesh.config import Settings
from mesh.dev.loader import load_app
from mesh.dev.stack import free_port, group_config
from mesh.errors import ConfigError, InputError, MeshError, SchemaError
from mesh.logs import configure_logging
from mesh.runtime.app import Mesh
from mesh.runtime.metrics import Metrics
from mesh.runtime.status import StatusServer, observed

__all__ = ["Supervisor", "WorkerRun", "supervise"]

log = logging.getLogger("mesh.supervisor")

#: A worker's exit code that says its configuration is wrong: restarting cannot help.
CONFIG_ERROR_EXIT = 2
_SCRAPE_TIMEOUT_S = 3.0
#: A worker's /readyz answers from a thread of its own: fast, unless the worker is stuck
#: (a probe of the supervisor is often given 1 s in all).
_READY_TIMEOUT_S = 0.8


@dataclass(frozen=True)
class WorkerRun:
    """What each worker process runs: the app of *app_spec* with resolved *settings*."""

    app_spec: str
    settings: Settings
    agents: tuple[str, ...] = ()
    log_level: str = "INFO"
    #: Serve the worker's own /metrics on a private loopback port (reported back).
    serve_metrics: bool = True


def _worker_main(index: int, run: WorkerRun, report: Connection) -> None:
    """A worker process: ``mesh run`` of *run*, its status port sent on *report*."""
    os.setpgrp()  # the supervisor forwards signals; a terminal's Ctrl-C reaches it alone
    configure_logging(run.log_level)
    _stop_with_parent()
    try:
        app = load_app(run.app_spec)
        app.settings = run.settings
        with _private_status(app, run) as (metrics, port):
            report.send(port)
            report.close()
            asyncio.run(
                app.serve(
                    list(run.agents) or None,
                    handle_signals=True,
                    metrics=metrics,
                    consumer_config=group_config(run.settings),
                )
            )
    except (ConfigError, InputError, SchemaError) as exc:  # the same at every restart
        log.error("worker %d: %s", index, exc)
        sys.exit(CONFIG_ERROR_EXIT)
    except MeshError as exc:  # the broker or the registry away: a restart may do
        log.error("worker %d: %s", index, exc)
        sys.exit(1)
    except Exception:
        log.exception("worker %d failed", index)
        sys.exit(1)


def _stop_with_parent() -> None:
    """SIGTERM this worker (a drain) when its supervisor dies without stopping it."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        log.warning("the supervisor is gone: stopping")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="mesh-supervisor-watch", daemon=True).start()


@contextmanager
def _private_status(app: Mesh, run: WorkerRun) -> Iterator[tuple[Metrics, int | None]]:
    """:func:`observed` on a free loopback port (retried if another process takes it)."""
    agents = list(run.agents) or None
    if not run.serve_metrics:
        with observed(app, agents, port=0) as metrics:
            yield metrics, None
        return
    for attempt in range(20):
        port = free_port()
        with ExitStack() as stack:
            try:
                metrics = stack.enter_context(
                    observed(app, agents, port=port, host="127.0.0.1", required=True)
                )
            except ConfigError:  # taken between free_port() and bind: pick another
                if attempt == 19:
                    raise
                continue
            yield metrics, port
            return


@dataclass
class _Slot:
    index: int
    process: BaseProcess | None = None
    report: Connection | None = None
    port: int | None = None
    exits: deque[float] = field(default_factory=deque)
    restarts: int = 0
    restart_at: float | None = None


class Supervisor:
    """Runs *processes* workers of *run* until stopped by a signal or a crash loop."""

    def __init__(
        self,
        run: WorkerRun,
        processes: int,
        *,
        max_crashes: int = 5,
        crash_window_s: float = 60.0,
        backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
        stop_timeout_s: float = 120.0,
    ) -> None:
        if processes < 1:
            raise InputError("--processes must be 1 or more")
        self.run_spec = run
        self._context = multiprocessing.get_context("spawn")
        self._slots = [_Slot(i) for i in range(processes)]
        self._max_crashes = max_crashes
        self._window_s = crash_window_s
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._stop_timeout_s = stop_timeout_s
        self._signals: list[int] = []
        self._exit_code = 0
        self._lock = threading.Lock()

    # -- what the status server reads (from its own threads) ---------------------------

    def worker_ports(self) -> dict[int, int]:
        """The private status port of each running worker that reported one."""
        with self._lock:
            return {s.index: s.port for s in self._slots if s.port is not None and s.process}

    def ready(self) -> bool:
        """Every worker runs and answers ready on its own /readyz."""
        ports = self.worker_ports()
        if len(ports) < len(self._slots):
            return False
        with ThreadPoolExecutor(len(ports)) as pool:
            return all(pool.map(_worker_ready, ports.values()))

    def collect(self) -> Iterator[Metric]:
        """The workers' metric families merged, each sample labelled by its worker; then
        the supervisor's own."""
        ports = self.worker_ports()
        with ThreadPoolExecutor(max(1, len(ports))) as pool:
            texts = list(pool.map(_scrape, ports.values()))
        yield from merge_families(
            (str(index), text) for index, text in zip(ports, texts, strict=True) if text
        )
        up = GaugeMetricFamily(
            "mesh_worker_up",
            "1 while the worker process runs (mesh run --processes).",
            labels=["worker"],
        )
        restarts = CounterMetricFamily(
            "mesh_worker_restarts",
            "Times the supervisor restarted the worker after it exited unasked.",
            labels=["worker"],
        )
        with self._lock:
            for s in self._slots:
                up.add_metric([str(s.index)], int(s.process is not None))
                restarts.add_metric([str(s.index)], s.restarts)
        yield up
        yield restarts

    def describe(self) -> list[Metric]:  # registering must not scrape the workers
        return []

    # -- the supervising loop ------------------------------------------------------------

    def run(self) -> int:
        """Supervise until stopped; the exit code (0 after a clean stop)."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        for sig in previous:
            signal.signal(sig, self._on_signal)
        try:
            for slot in self._slots:
                self._start(slot)
            self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for slot in self._slots:  # only after a stop timeout
                if slot.process is not None and slot.process.is_alive():
                    slot.process.kill()
                    slot.process.join(5)
            wake_r.close()
            wake_w.close()
        return self._exit_code

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)

    def _loop(self, wake: socket.socket) -> None:
        stopping_since: float | None = None
        forwarded = 0  # signals forwarded to the workers (each one received, once)
        while True:
            now = time.monotonic()
            if stopping_since is None and (self._signals or self._exit_code):
                stopping_since = now
                if self._signals:
                    name = signal.Signals(self._signals[0]).name
                    log.info("%s: stopping the workers (they drain first)", name)
            if stopping_since is not None:
                if forwarded == 0 or forwarded < len(self._signals):
                    self._terminate_all()
                    forwarded = max(1, len(self._signals))
                live = [s for s in self._slots if s.process is not None]
                if not live:
                    return
                if now - stopping_since > self._stop_timeout_s:
                    log.error(
                        "worker %s did not stop within %.0f s: killed",
                        ", ".join(str(s.index) for s in live),
                        self._stop_timeout_s,
                    )
                    self._exit_code = self._exit_code or 1
                    return
            else:
                for slot in self._slots:
                    if slot.restart_at is not None and slot.restart_at <= now:
                        self._start(slot)
            waiting: list[object] = [wake]
            timeout = 1.0
            for slot in self._slots:
                if slot.process is not None:
                    waiting.append(slot.process.sentinel)
                if slot.report is not None:
                    waiting.append(slot.report)
                if slot.restart_at is not None and stopping_since is None:
                    timeout = min(timeout, max(0.0, slot.restart_at - now))
            for ready in wait(waiting, timeout):  # type: ignore[arg-type]
                if ready is wake:
                    _drain(wake)
                else:
                    self._on_ready(ready, stopping=stopping_since is not None)

    def _on_ready(self, ready: object, *, stopping: bool) -> None:
        for slot in self._slots:
            if slot.report is not None and ready is slot.report:
                try:
                    port = slot.report.recv()
                except (EOFError, OSError):
                    port = None
                slot.report.close()
                with self._lock:
                    slot.report = None
                    slot.port = port
                return
            if slot.process is not None and ready == slot.process.sentinel:
                self._exited(slot, stopping=stopping)
                return

    def _start(self, slot: _Slot) -> None:
        receive, send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_worker_main,
            args=(slot.index, self.run_spec, send),
            name=f"mesh-worker-{slot.index}",
        )
        process.start()
        send.close()
        with self._lock:
            slot.process, slot.report, slot.port, slot.restart_at = process, receive, None, None
        log.info("worker %d started (pid %d)", slot.index, process.pid)

    def _exited(self, slot: _Slot, *, stopping: bool) -> None:
        assert slot.process is not None
        process = slot.process
        process.join()
        code = process.exitcode
        with self._lock:
            slot.process = None
            slot.port = None
            if slot.report is not None:
                slot.report.close()
                slot.report = None
        how = _describe_exit(code)
        if stopping:
            clean = code == 0 or code in (-signal.SIGTERM, -signal.SIGINT)
            (log.info if clean else log.error)("worker %d stopped (%s)", slot.index, how)
            if not clean:
                self._exit_code = self._exit_code or 1
            return
        now = time.monotonic()
        slot.exits.append(now)
        while slot.exits and now - slot.exits[0] > self._window_s:
            slot.exits.popleft()
        if code == CONFIG_ERROR_EXIT:
            log.error("worker %d %s (a configuration error): giving up", slot.index, how)
            self._exit_code = CONFIG_ERROR_EXIT
        elif len(slot.exits) >= self._max_crashes:
            log.error(
                "worker %d %s: %d exits within %.0f s, a crash loop: giving up",
                slot.index,
                how,
                len(slot.exits),
                self._window_s,
            )
            self._exit_code = 1
        else:
            delay = min(self._max_backoff_s, self._backoff_s * 2 ** (len(slot.exits) - 1))
            log.warning("worker %d %s: restarting in %.1f s", slot.index, how, delay)
            slot.restart_at = now + delay
            slot.restarts += 1

    def _terminate_all(self) -> None:
        for slot in self._slots:
            slot.restart_at = None
            process = slot.process
            if process is not None and process.pid is not None:
                with suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)


def supervise(
    run: WorkerRun,
    processes: int,
    *,
    port: int,
    host: str = "0.0.0.0",
    required: bool = True,
) -> int:
    """Run *processes* workers of *run* under a :class:`Supervisor`, their metrics merged
    and served on *port* (0: not served); the exit code."""
    supervisor = Supervisor(run, processes)
    registry = CollectorRegistry()
    registry.register(supervisor)  # type: ignore[arg-type]
    server = None
    if port:
        try:
            server = StatusServer(registry, ready=supervisor.ready, host=host, port=port)
        except ConfigError as exc:
            if required:
                raise
            log.warning("%s; running without it", exc)
    # Workers serve their own metrics only for a supervisor that merges them.
    supervisor.run_spec = replace(run, serve_metrics=server is not None)
    if server is not None:
        server.start()
    try:
        return supervisor.run()
    finally:
        if server is not None:
            server.close()


def merge_families(scrapes: Iterator[tuple[str, str]] | Sequence[tuple[str, str]]) -> list[Metric]:
    """Each family of the (worker, exposition text) *scrapes* once, every sample labelled
    with its ``worker``."""
    merged: dict[str, Metric] = {}
    for worker, text in scrapes:
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(
                    family.name, family.documentation, family.type, family.unit
                )
            into.samples.extend(
                Sample(s.name, {**s.labels, "worker": worker}, s.value, s.timestamp, s.exemplar)
                for s in family.samples
            )
    return list(merged.values())


def _scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=_SCRAPE_TIMEOUT_S
        ) as answer:
            return str(answer.read().decode())
    except OSError as exc:  # the worker is going away; the others still count
        log.debug("worker on port %d not scraped: %s", port, exc)
        return ""


def _worker_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/readyz", timeout=_READY_TIMEOUT_S
        ) as answer:
            return bool(answer.status == 200)
    except OSError:  # 503 (HTTPError) or gone
        return False


def _drain(wake: socket.socket) -> None:
    try:
        while wake.recv(4096):
            pass
    except BlockingIOError:
        pass


def _describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
