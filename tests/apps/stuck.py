"""An async agent whose ``stuck*`` jobs take a minute, run as ``mesh run``.

Topics and schemas are the relay app's (``RELAY_PREFIX``, ``RELAY_SCHEMAS``).
"""

import asyncio
import os

from mesh import Context, Mesh
from tests.apps.relay import PREFIX, Job, JobDone

app = Mesh(f"{PREFIX}-stuck", schemas_dir=os.environ.get("RELAY_SCHEMAS", "schemas"))


@app.agent("stuck", consumes=Job, timeout="off")
async def stuck(event: Job, ctx: Context) -> JobDone:
    if event.job_id.startswith("stuck"):
        await asyncio.sleep(60)
    return JobDone(job_id=event.job_id, worker=os.getpid())
