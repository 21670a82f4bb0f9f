"""An app run as a separate ``mesh run`` process by the fault-injection tests.

Topics come from ``RELAY_PREFIX`` so each test uses its own; schemas from ``RELAY_SCHEMAS``.
"""

import asyncio
import os

from mesh import Context, Event, Mesh
from mesh.config import RetryPolicy

PREFIX = os.environ.get("RELAY_PREFIX", "relay")
#: When set, every first attempt fails, so every record waits in the 2 s retry topic.
FAIL_FIRST = bool(os.environ.get("RELAY_FAIL_FIRST"))


class Job(Event, topic=f"{PREFIX}.jobs", key="job_id", name="relay.Job"):
    job_id: str


class JobDone(Event, topic=f"{PREFIX}.done", key="job_id", name="relay.JobDone"):
    job_id: str
    worker: int


app = Mesh(f"{PREFIX}-app", schemas_dir=os.environ.get("RELAY_SCHEMAS", "schemas"))


@app.agent(
    "relay",
    consumes=Job,
    concurrency=50,
    retry=RetryPolicy(attempts=3, backoff="fixed", initial_delay="2s"),
)
async def relay(event: Job, ctx: Context) -> JobDone:
    await asyncio.sleep(0.002)
    if FAIL_FIRST and ctx.attempt == 1:
        raise RuntimeError("first attempts fail")
    return JobDone(job_id=event.job_id, worker=os.getpid())
