"""What an operator reads in the logs: assignment, each retry and when it is due, the dead
letter with its reason and one traceback, shutdown; no HTTP request lines at INFO."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable

import pytest

from mesh import Event, Mesh, RetryPolicy
from mesh.logs import configure_logging
from mesh.testing import unique_name
from tests.support import read_topic, running


def test_a_failing_event_logs_its_retry_due_time_then_one_dead_letter_with_its_traceback(
    make_app: Callable[..., Mesh], caplog: pytest.LogCaptureFixture
) -> None:
    class Flaky(Event, topic=unique_name("flaky")):
        n: int

    app = make_app(Flaky)

    @app.agent("worker", consumes=Flaky, retry=RetryPolicy(attempts=2, initial_delay="200ms"))
    async def worker(event: Flaky) -> None:
        raise ValueError(f"cannot handle {event.n}")

    caplog.set_level(logging.INFO, logger="mesh")
    with running(app):
        app.publish(Flaky(n=7))
        dlq = f"{Flaky.topic()}.{app.group_id('worker')}.dlq"
        read_topic(app.settings.bootstrap_servers, dlq, 1, partitions=3)

    lines = [(r.levelname, r.getMessage(), r.exc_info) for r in caplog.records]
    messages = [m for _, m, _ in lines]
    assert any(re.match(rf"agent worker: assigned \[\('{Flaky.topic()}', 0\)", m) for m in messages)
    [retry] = [m for m in messages if " due at " in m]
    assert re.fullmatch(
        rf"agent worker: {Flaky.topic()}:\d@0 attempt 2 of 2 due at \d\d:\d\d:\d\d\.\d{{3}}Z "
        rf"\(in 0\.2 s\) through {Flaky.topic()}\.{app.group_id('worker')}\.retry\.200ms",
        retry,
    ), retry
    [dead] = [(lvl, m, exc) for lvl, m, exc in lines if "dead-lettered" in m]
    assert dead[0] == "ERROR"
    assert re.fullmatch(
        rf"agent worker: {Flaky.topic()}\.{app.group_id('worker')}\.retry\.200ms:\d@0 "
        rf"dead-lettered to {dlq} \(reason exhausted, after 2 attempt\(s\)\): "
        r"ValueError\('cannot handle 7'\)",
        dead[1],
    ), dead[1]
    assert dead[2] is not None
    assert dead[2][1].args == ("cannot handle 7",)
    assert [exc for _, _, exc in lines if exc] == [dead[2]]  # the traceback once
    assert "agent worker: stopping, 0 event(s) in flight" in messages
    assert "agent worker: stopped: offsets committed, left the group" in messages


@pytest.mark.parametrize("name", ["httpx", "httpx2"])
def test_http_request_lines_are_kept_for_debug(name: str) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.level, root.handlers[:]
    try:
        configure_logging("INFO", stream=stream)
        logging.getLogger(name).info('HTTP Request: GET http://registry/subjects "200 OK"')
        logging.getLogger("mesh.runtime.worker").info("agent a: assigned []")
        assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == [
            "agent a: assigned []"
        ]
        configure_logging("DEBUG", stream=stream)
        logging.getLogger(name).info("HTTP Request: GET http://registry/subjects")
        assert "HTTP Request: GET http://registry/subjects" in stream.getvalue().splitlines()[-1]
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        logging.getLogger(name).setLevel(logging.NOTSET)
