"""An app run as a separate ``mesh run`` process by the fault-injection tests.

Topics come from ``RELAY_PREFIX`` so each test uses its own; schemas from ``RELAY_SCHEMAS``.
"""

import asyncio
import os

from mesh import Context, Event, Mesh

PREFIX = os.environ.get("RELAY_PREFIX", "relay")


class Job(Event, topic=f"{PREFIX}.jobs", key="job_id", name="relay.Job"):
    job_id: str


class JobDone(Event, topic=f"{PREFIX}.done", key="job_id", name="relay.JobDone"):
    job_id: str
    worker: int


app = Mesh(f"{PREFIX}-app", schemas_dir=os.environ.get("RELAY_SCHEMAS", "schemas"))


@app.agent("relay", consumes=Job, concurrency=50)
async def relay(event: Job, ctx: Context) -> JobDone:
    await asyncio.sleep(0.002)
    return JobDone(job_id=event.job_id, worker=os.getpid())
