"""/readyz tells the truth about the group: a member that holds nothing is not ready."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mesh import Event, Mesh, Settings
from mesh.config import RetryPolicy, TopicDefaults
from mesh.runtime.metrics import Metrics
from mesh.testing import unique_name
from tests.support import running


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_member_without_partitions_is_not_ready(
    make_app: Callable[..., Mesh], mesh_settings: Settings, schemas_dir: Path
) -> None:
    stem = unique_name("ready")

    class Ping(Event, topic=f"{stem}.pings", key="ping_id", name="test.Ping"):
        ping_id: str

    settings = mesh_settings.model_copy(update={"topics": TopicDefaults(partitions=1)})
    first = make_app(Ping, settings=settings)
    second = Mesh(first.name, settings=settings, schemas_dir=schemas_dir)  # the same group
    for app in (first, second):
        # One attempt: no retry topics, so the group has one partition in all.
        app.agent("pinger", consumes=Ping, retry=RetryPolicy(attempts=1))(lambda event: None)
    holder, spare = Metrics(), Metrics()
    with running(first, metrics=holder):
        _wait(holder.ready, "the only member never became ready")
        with running(second, metrics=spare):
            _wait(lambda: spare.agent("pinger").joined, "the second member never joined")
            _wait(lambda: spare.agent("pinger").last_poll_s > 0, "the second never polled")
            assert holder.ready()
            assert not spare.ready()  # joined, holds nothing, no lag thread said "spare"
