"""A sync agent whose calls for ``hang*`` jobs never return in time, run as ``mesh run``.

Topics and schemas are the relay app's (``RELAY_PREFIX``, ``RELAY_SCHEMAS``).
"""

import os
import time

from mesh import Context, Mesh
from mesh.config import RetryPolicy
from tests.apps.relay import PREFIX, Job, JobDone

app = Mesh(f"{PREFIX}-hung", schemas_dir=os.environ.get("RELAY_SCHEMAS", "schemas"))


@app.agent("hung", consumes=Job, concurrency=4, timeout="1s", retry=RetryPolicy(attempts=1))
def hung(event: Job, ctx: Context) -> JobDone:
    if event.job_id.startswith("hang"):
        time.sleep(600)  # an LLM call without a timeout of its own
    return JobDone(job_id=event.job_id, worker=os.getpid())
