"""``mesh demo``: the research pipeline run under faults, its progress read back from Kafka."""

from mesh.dev.demo.run import APP_SPEC, DemoOptions, DemoReport, run_demo
from mesh.dev.demo.watch import AgentActivity, RunStatus, RunWatcher
from mesh.dev.demo.workers import WorkerPool

__all__ = [
    "APP_SPEC",
    "AgentActivity",
    "DemoOptions",
    "DemoReport",
    "RunStatus",
    "RunWatcher",
    "WorkerPool",
    "run_demo",
]
