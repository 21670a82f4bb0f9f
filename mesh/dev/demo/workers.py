"""The demo's worker processes: ``python -m mesh run APP`` children, killed and replaced."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

__all__ = ["WorkerPool"]


class WorkerPool:
    """``mesh run`` processes sharing the app's consumer groups, each logging to its own file.

    Workers run in their own session, so a Ctrl-C in the terminal reaches only the demo,
    which then stops them in order (:meth:`stop`).
    """

    def __init__(self, app_spec: str, *, env: Mapping[str, str], log_dir: Path) -> None:
        self.app_spec = app_spec
        self._env = dict(env)
        self._log_dir = log_dir
        self._procs: list[subprocess.Popen[bytes]] = []
        self._started = 0
        self.killed: list[int] = []

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs if proc.poll() is None]

    def start(self, count: int = 1) -> list[int]:
        """Start *count* more workers; return their pids."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        pids = []
        for _ in range(count):
            self._started += 1
            log_path = self._log_dir / f"worker-{self._started}.log"
            with log_path.open("wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "mesh", "run", self.app_spec],
                    env=self._env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self._procs.append(proc)
            pids.append(proc.pid)
        return pids

    def exited(self) -> list[tuple[int, int]]:
        """(pid, exit code) of workers that ended on their own (not killed by the pool)."""
        return [
            (proc.pid, code)
            for proc in self._procs
            if (code := proc.poll()) is not None and proc.pid not in self.killed
        ]

    def kill_one(self) -> int:
        """SIGKILL the oldest running worker (no shutdown, no commit); return its pid."""
        proc = next(p for p in self._procs if p.poll() is None)
        proc.kill()
        proc.wait()
        self.killed.append(proc.pid)
        return proc.pid

    def stop(self, *, timeout_s: float = 15.0) -> None:
        """SIGTERM every worker (they finish in-flight events and commit), SIGKILL stragglers."""
        running = [p for p in self._procs if p.poll() is None]
        for proc in running:
            os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for proc in running:
            try:
                proc.wait(max(deadline - time.monotonic(), 0.01))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
