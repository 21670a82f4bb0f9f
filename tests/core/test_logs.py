"""Log lines: JSON with the event's ids when not a terminal, readable text on a terminal."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer

from mesh.config import Settings
from mesh.dev.stack import free_port
from mesh.envelope import Envelope
from mesh.errors import InputError
from mesh.logs import RepeatFilter, configure_logging
from mesh.runtime.context import Context


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def context(agent: str = "answerer") -> Context:
    envelope = Envelope.new_chain("q.Question", produced_by="test")
    return Context(
        agent=agent, envelope=envelope, topic="t", partition=0, offset=0, key=None, raw_headers=[]
    )


def test_json_lines_carry_the_event_ids_through_ctx_log_and_plain_loggers() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)

    async def handle() -> Context:  # each event is handled on a task of its own
        ctx = context()
        ctx._bind_logs()  # as the worker does on that task
        ctx.log.info("answering %s", "q1")
        logging.getLogger("mesh.runtime.worker").warning("attempt failed")
        return ctx

    ctx = asyncio.run(handle())
    context()  # a context built outside any task binds nothing
    logging.getLogger("mesh.app").info("outside any event")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]

    ids = {
        "agent": "answerer",
        "event_id": ctx.event_id,
        "correlation_id": ctx.correlation_id,
    }
    assert lines[0] == {**lines[0], **ids, "message": "answering q1", "level": "info"}
    assert lines[0]["logger"] == "mesh.agent.answerer"
    assert lines[1] == {**lines[1], **ids, "message": "attempt failed", "level": "warning"}
    assert "event_id" not in lines[2]
    assert "causation_id" not in lines[0]  # a chain's first event has no cause


def test_json_lines_hold_the_traceback() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    line = json.loads(stream.getvalue())
    assert line["message"] == "failed"
    assert "ValueError: boom" in line["exception"]


def test_a_terminal_gets_readable_lines_with_the_ids_appended() -> None:
    stream = Tty()
    configure_logging("DEBUG", stream=stream)
    ctx = context()
    ctx.log.debug("hello")
    text = stream.getvalue()
    assert not text.startswith("{")
    assert "mesh.agent.answerer: hello  agent=answerer" in text
    assert f"event_id={ctx.event_id}" in text


def test_an_unknown_level_is_bad_input() -> None:
    with pytest.raises(InputError, match="unknown log level 'LOUD'"):
        configure_logging("LOUD", stream=io.StringIO())


def test_clients_without_a_broker_log_the_error_once_then_a_count_now_and_then(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    [repeats] = [f for f in logging.getLogger("mesh.kafka").filters if isinstance(f, RepeatFilter)]
    monkeypatch.setattr(repeats, "interval_s", 2.0)
    caplog.set_level(logging.INFO, logger="mesh.kafka")
    settings = Settings(bootstrap_servers=f"127.0.0.1:{free_port()}", broker="kafka")
    consumer = Consumer(settings.kafka_config(**{"group.id": "nobody"}))
    producer = Producer(settings.kafka_config())
    consumer.subscribe(["nowhere"])
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # each client retries about 20 times a second
            consumer.poll(0.1)
            producer.poll(0)
    finally:
        consumer.close()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors, "the clients reported nothing"
    assert len(errors) < 10, errors
    assert any("more like it in the last 2 s" in line for line in errors), errors
