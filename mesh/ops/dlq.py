"""Dead letters for review (``mesh dlq``): list, inspect and redrive what agents gave up on.

A dead letter is the failed record, byte for byte, in ``{source}.{group}.dlq`` with the
failure headers of the :mod:`mesh.headers` contract saying why (``mesh.dlq.reason``,
``mesh.error.kind``, ``mesh.exception.*``, ``mesh.original.*``). It is named by its place
in that topic, ``{dlq_topic}:{partition}:{offset}``: stable and copy-pasteable; the time
it failed for good is that record's timestamp.

Kafka cannot delete or change one record, so a redriven dead letter stays in its topic;
that it was redriven is recorded beside it, in the compacted topic :data:`REDRIVES_TOPIC`
(key: the dead letter's id), once the copy sent back is acknowledged. Listing shows the
mark, and a marked dead letter is not sent again unless forced. The copy carries
``mesh.redrive-count``; if it fails again, its new dead letter shows the count, which is
what stops a record from looping forever (``max_redrives``).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, cast

from confluent_kafka import KafkaError, Message
from confluent_kafka.admin import AdminClient

from mesh import headers as h
from mesh.config import Settings
from mesh.errors import InputError
from mesh.kafka.clients import admin_config
from mesh.kafka.reader import Tail, TailRecord, tail_record
from mesh.kafka.topics import TopicSpec, ensure_topics, existing_topics
from mesh.runtime.app import Mesh
from mesh.runtime.delay import delay_dead_letter_topic, namespace_of
from mesh.runtime.failure import DeadLetterReason
from mesh.runtime.publisher import Publisher
from mesh.serde import Serde

__all__ = [
    "REDRIVES_TOPIC",
    "DeadLetter",
    "DeadLetterFilter",
    "RedriveReport",
    "Redriven",
    "dead_letter_topics",
    "iso",
    "parse_id",
    "read_by_id",
    "read_dead_letters",
    "read_one",
    "read_redriven",
    "redrive",
    "redriven_headers",
]

#: Which dead letters were redriven, when and where to: key the letter's id, value JSON.
REDRIVES_TOPIC = "_mesh.dlq.redrives"

#: Headers that describe a past failure or retry, not the record: never sent back.
_NOT_REDRIVEN = h.FAILURE_HEADERS | {h.REDRIVE_COUNT}

#: Progress callback: (dlq topic, records read so far, records in the topic).
OnRead = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Redriven:
    """The mark of a redriven dead letter: when (epoch ms) and to which topic."""

    at_ms: int
    to_topic: str

    def to_json(self) -> str:
        return json.dumps({"at_ms": self.at_ms, "to_topic": self.to_topic})

    @classmethod
    def from_json(cls, raw: bytes) -> Redriven | None:
        try:
            data = json.loads(raw)
            return cls(at_ms=int(data["at_ms"]), to_topic=str(data["to_topic"]))
        except (ValueError, KeyError, TypeError):  # not written by mesh: no mark
            return None


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter: where it sits, where it came from, why it failed, and whether
    (and when) it was redriven."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]
    timestamp_ms: int | None = None  # when it was dead-lettered
    redriven: Redriven | None = None

    @classmethod
    def from_message(cls, msg: Message) -> DeadLetter:
        _, timestamp_ms = msg.timestamp()
        return cls(
            topic=msg.topic() or "",
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            key=msg.key(),
            value=msg.value(),
            headers=tuple(msg.headers() or ()),
            timestamp_ms=timestamp_ms if timestamp_ms >= 0 else None,
        )

    @property
    def id(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    def header(self, name: str) -> str | None:
        """The last value of header *name* as text (the one a reader acts on)."""
        raw = h.last(self.headers, name)
        return None if raw is None else raw.decode("utf-8", "replace")

    def header_int(self, name: str) -> int | None:
        return h.to_int(h.last(self.headers, name))

    @property
    def error_class(self) -> str:
        return self.header(h.EXCEPTION_CLASS) or ""

    @property
    def original_topic(self) -> str | None:
        return self.header(h.ORIGINAL_TOPIC)

    @property
    def redrive_count(self) -> int:
        return self.header_int(h.REDRIVE_COUNT) or 0

    def summary(self) -> dict[str, Any]:
        """The JSON object ``mesh dlq list --json`` prints."""
        original_ms = self.header_int(h.ORIGINAL_TIMESTAMP)
        first_failure_ms = self.header_int(h.FIRST_FAILURE_TS)
        return {
            "id": self.id,
            "dlq_topic": self.topic,
            "dlq_partition": self.partition,
            "dlq_offset": self.offset,
            "agent": self.header(h.DLQ_AGENT),
            "group": self.header(h.ORIGINAL_GROUP),
            "reason": self.header(h.DLQ_REASON),
            "error_kind": self.header(h.ERROR_KIND),
            "error_class": self.header(h.EXCEPTION_CLASS),
            "error_message": self.header(h.EXCEPTION_MESSAGE),
            "attempts": self.header_int(h.ATTEMPT),
            "original_topic": self.original_topic,
            "original_partition": self.header_int(h.ORIGINAL_PARTITION),
            "original_offset": self.header_int(h.ORIGINAL_OFFSET),
            "original_timestamp_ms": original_ms,
            "original_timestamp": iso(original_ms),
            "first_failure_ms": first_failure_ms,
            "first_failure": iso(first_failure_ms),
            "failed_at_ms": self.timestamp_ms,
            "failed_at": iso(self.timestamp_ms),
            "correlation_id": self.header(h.CORRELATION_ID),
            "event_type": self.header(h.EVENT_TYPE),
            "redrive_count": self.redrive_count,
            "redriven_at": iso(self.redriven.at_ms) if self.redriven else None,
            "redriven_to": self.redriven.to_topic if self.redriven else None,
        }


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters to act on; every given condition must hold."""

    since_ms: int | None = None  # dead-lettered at or after (epoch ms)
    error_class: str | None = None  # qualified name, or a dotted suffix of it
    agent: str | None = None
    reason: DeadLetterReason | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.since_ms is not None and (letter.timestamp_ms or 0) < self.since_ms:
            return False
        if self.error_class is not None:
            name = letter.error_class
            if name != self.error_class and not name.endswith("." + self.error_class):
                return False
        if self.reason is not None and letter.header(h.DLQ_REASON) != self.reason.value:
            return False
        return self.agent is None or letter.header(h.DLQ_AGENT) == self.agent


def dead_letter_topics(
    settings: Settings,
    *,
    app: Mesh | None = None,
    agent: str | None = None,
    topic: str | None = None,
) -> list[str]:
    """The dead-letter topics to read: *topic*, or those of *app* (one *agent*'s) that exist.

    An app's dead-letter topics are created when it starts, so an app never run has none.
    Without *agent*, the app's delay forwarder's dead letters are read too.
    """
    present = existing_topics(AdminClient(admin_config(settings)))
    if topic is not None:
        if topic not in present:
            raise InputError(f"topic {topic!r} does not exist")
        return [topic]
    if app is None:
        raise InputError("name the dead letters: --app MODULE:APP (or MESH_APP), or --topic")
    agents = app.agents
    if agent is not None and agent not in agents:
        known = ", ".join(agents) or "none"
        raise InputError(f"app {app.name!r} has no agent {agent!r}; its agents are: {known}")
    wanted = [
        topic
        for name in agents
        if agent is None or name == agent
        for topic in app.topology(name).dead_letters
    ]
    if agent is None:
        wanted.append(delay_dead_letter_topic(namespace_of(app.settings)))
    return [t for t in dict.fromkeys(wanted) if t in present]


def parse_id(letter_id: str) -> tuple[str, int, int]:
    """``topic:partition:offset`` -> its parts (Kafka topic names never contain ``:``)."""
    topic, _, rest = letter_id.partition(":")
    partition, _, offset = rest.partition(":")
    if not (topic and partition.isdigit() and offset.isdigit()):
        raise InputError(f"{letter_id!r} is not a dead letter id (DLQ_TOPIC:PARTITION:OFFSET)")
    return topic, int(partition), int(offset)


def read_dead_letters(
    settings: Settings,
    topics: Iterable[str],
    *,
    where: DeadLetterFilter | None = None,
    limit: int | None = None,
    on_read: OnRead | None = None,
) -> Iterator[DeadLetter]:
    """The matching dead letters of *topics*, up to their ends when each read starts.

    Values are not decoded, so listing works without the registry.
    """
    where = where or DeadLetterFilter()
    topics = list(topics)
    marks = read_redriven(settings) if topics else {}
    found = 0
    for topic in topics:
        with Tail(settings, topic, from_beginning=True, to_end=True) as reader:
            total = sum((reader.ends or {}).values())
            for read, msg in enumerate(reader.messages(), start=1):
                if on_read is not None:
                    on_read(topic, read, total)
                letter = DeadLetter.from_message(msg)
                letter = replace(letter, redriven=marks.get(letter.id))
                if where.matches(letter):
                    yield letter
                    found += 1
                    if limit is not None and found >= limit:
                        return


def read_one(settings: Settings, letter_id: str) -> tuple[DeadLetter, TailRecord]:
    """The dead letter named *letter_id*, with its value decoded through the registry."""
    serde = Serde.from_settings(settings)
    msg = _message(settings, letter_id, serde)
    letter = DeadLetter.from_message(msg)
    letter = replace(letter, redriven=read_redriven(settings).get(letter.id))
    return letter, tail_record(msg, serde)


def read_by_id(settings: Settings, letter_ids: Iterable[str]) -> list[DeadLetter]:
    """The dead letters named by *letter_ids* (values not decoded), each with its mark."""
    ids = list(dict.fromkeys(letter_ids))
    for letter_id in ids:
        parse_id(letter_id)  # every id is checked before anything is read
    marks = read_redriven(settings) if ids else {}
    return [
        replace(DeadLetter.from_message(_message(settings, i)), redriven=marks.get(i)) for i in ids
    ]


def _message(settings: Settings, letter_id: str, serde: Serde | None = None) -> Message:
    topic, partition, offset = parse_id(letter_id)
    with Tail(
        settings, topic, partitions=[partition], from_offset=offset, to_end=True, serde=serde
    ) as reader:
        for msg in reader.messages(count=1):
            if msg.offset() == offset:
                return msg
    raise InputError(f"no dead letter {letter_id!r}: the partition has no record at that offset")


def read_redriven(settings: Settings) -> dict[str, Redriven]:
    """Dead letter id -> its latest redrive mark (none before the first redrive).

    The last mark of an id wins, as compaction would keep it (the embedded broker does
    not compact).
    """
    if REDRIVES_TOPIC not in existing_topics(AdminClient(admin_config(settings))):
        return {}
    marks: dict[str, Redriven] = {}
    with Tail(settings, REDRIVES_TOPIC, from_beginning=True, to_end=True) as reader:
        for msg in reader.messages():
            key, value = msg.key(), msg.value()
            mark = None if value is None else Redriven.from_json(value)
            if key is not None and mark is not None:
                marks[key.decode("utf-8", "replace")] = mark
    return marks


@dataclass
class RedriveReport:
    """What a redrive did (or, dry, would do); ``skipped`` and ``failed`` say why for each.

    ``sent`` dead letters carry the mark they were (dry: would be) given. Skipped ones
    were refused before sending (``already`` those redriven before,
    which need *force*); failed ones were sent and not acknowledged (they may or may not
    have arrived); ``unmarked`` ones were sent but their redrive mark was not written.
    """

    dry_run: bool
    sent: list[DeadLetter] = field(default_factory=list)
    skipped: list[tuple[DeadLetter, str]] = field(default_factory=list)
    already: list[DeadLetter] = field(default_factory=list)
    failed: list[tuple[DeadLetter, str]] = field(default_factory=list)
    unmarked: list[tuple[DeadLetter, str]] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return len(self.sent) + len(self.skipped) + len(self.already) + len(self.failed)


def redrive(
    settings: Settings,
    letters: Iterable[DeadLetter],
    *,
    max_redrives: int = 3,
    execute: bool = False,
    force: bool = False,
    to_topic: str | None = None,
    timeout_s: float = 30.0,
) -> RedriveReport:
    """Send each dead letter back to its original topic (or *to_topic*) for a fresh set of
    attempts, and mark it redriven.

    Key, value and the record's own headers go back byte for byte, with
    ``mesh.redrive-count`` one higher; failure headers (:data:`mesh.headers.FAILURE_HEADERS`)
    stay behind. Every consumer group of the original topic sees the record again, not
    only the agent that failed, so handlers there should be idempotent. A dead letter
    marked redriven is sent again only with *force*; one whose record was already
    redriven *max_redrives* times is skipped. Dry by default; with *execute*, the
    producer is idempotent with acks=all and every send is acknowledged, and marked,
    before this returns.
    """
    report = RedriveReport(dry_run=not execute)
    present = existing_topics(AdminClient(admin_config(settings)))
    now_ms = int(time.time() * 1000)
    if to_topic is not None and to_topic not in present:
        raise InputError(f"--to-topic {to_topic}: the topic does not exist")
    plan: list[DeadLetter] = []
    for letter in letters:
        target = to_topic or letter.original_topic
        if target is None:
            report.skipped.append((letter, f"no {h.ORIGINAL_TOPIC} header"))
        elif target not in present:  # producing would auto-create it on some brokers
            report.skipped.append((letter, f"original topic {target!r} does not exist"))
        elif letter.redrive_count >= max_redrives:
            report.skipped.append((letter, f"already redriven {letter.redrive_count} times"))
        elif letter.redriven is not None and not force:
            report.already.append(letter)
        else:
            plan.append(replace(letter, redriven=Redriven(now_ms, target)))
    if not execute:
        report.sent = plan
        return report
    _send(settings, plan, report, timeout_s)
    _mark(settings, report, timeout_s)
    return report


def redriven_headers(letter: DeadLetter) -> list[tuple[str, bytes | None]]:
    """The headers a redriven copy carries: the record's own, and the new redrive count."""
    kept = [(k, v) for k, v in letter.headers if k not in _NOT_REDRIVEN]
    return [*kept, (h.REDRIVE_COUNT, str(letter.redrive_count + 1).encode())]


def _send(
    settings: Settings, plan: list[DeadLetter], report: RedriveReport, timeout_s: float
) -> None:
    publisher = Publisher(settings, Serde.from_settings(settings))
    results: dict[str, KafkaError | None] = {}
    for letter in plan:
        assert letter.redriven is not None  # the plan names each one's target
        publisher.send_raw(
            letter.redriven.to_topic,
            letter.value,
            letter.key,
            cast(list[tuple[str, bytes]], redriven_headers(letter)),  # None values are valid
            on_delivery=functools.partial(_store, results, letter.id),
        )
    deadline = time.monotonic() + timeout_s
    while len(results) < len(plan) and time.monotonic() < deadline:
        publisher.flush(max(deadline - time.monotonic(), 0.0))
    for letter in plan:
        if letter.id not in results:
            report.failed.append((letter, f"not acknowledged within {timeout_s:.0f}s"))
        elif (err := results[letter.id]) is not None:
            report.failed.append((letter, f"the broker refused it: {err.str()}"))
        else:
            report.sent.append(letter)


def _mark(settings: Settings, report: RedriveReport, timeout_s: float) -> None:
    """Record the sent dead letters as redriven (:data:`REDRIVES_TOPIC`), now."""
    if not report.sent:
        return
    ensure_topics(
        AdminClient(admin_config(settings)),
        [TopicSpec(REDRIVES_TOPIC, 1, config={"cleanup.policy": "compact"})],
    )
    publisher = Publisher(settings, Serde.from_settings(settings))
    results: dict[str, KafkaError | None] = {}
    for letter in report.sent:
        assert letter.redriven is not None
        publisher.send_raw(
            REDRIVES_TOPIC,
            letter.redriven.to_json().encode(),
            letter.id.encode(),
            [],
            on_delivery=functools.partial(_store, results, letter.id),
        )
    publisher.flush(timeout_s)
    for letter in report.sent:
        err = results.get(letter.id, KafkaError(KafkaError._TIMED_OUT))
        if err is not None:
            report.unmarked.append((letter, err.str()))


def _store(
    results: dict[str, KafkaError | None], letter_id: str, err: KafkaError | None, _msg: Message
) -> None:
    results[letter_id] = err


def iso(epoch_ms: int | None) -> str | None:
    """Epoch milliseconds as an ISO-8601 UTC time."""
    if epoch_ms is None or epoch_ms < 0:
        return None
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds")
