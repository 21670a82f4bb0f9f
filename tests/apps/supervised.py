"""An app that ``mesh run --processes N`` runs in the supervisor tests (tests/dev).

Topics come from ``SUPERVISED_PREFIX`` so each test uses its own; schemas from
``SUPERVISED_SCHEMAS``; each handler sleeps ``SUPERVISED_SLEEP_S``. With
``SUPERVISED_CRASH`` set, every worker process dies as it imports the app (the
supervisor, which imports it first, does not): a crash loop.
"""

import asyncio
import multiprocessing
import os

from mesh import Context, Event, Mesh

PREFIX = os.environ.get("SUPERVISED_PREFIX", "supervised")
SLEEP_S = float(os.environ.get("SUPERVISED_SLEEP_S", "0.002"))

if os.environ.get("SUPERVISED_CRASH") and multiprocessing.parent_process() is not None:
    os._exit(3)


class Job(Event, topic=f"{PREFIX}.jobs", key="job_id", name="supervised.Job"):
    job_id: str


class JobDone(Event, topic=f"{PREFIX}.done", key="job_id", name="supervised.JobDone"):
    job_id: str
    worker: int


app = Mesh(f"{PREFIX}-app", schemas_dir=os.environ.get("SUPERVISED_SCHEMAS", "schemas"))


@app.agent("relay", consumes=Job, concurrency=200)
async def relay(event: Job, ctx: Context) -> JobDone:
    await asyncio.sleep(SLEEP_S)
    return JobDone(job_id=event.job_id, worker=os.getpid())
