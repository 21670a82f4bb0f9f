"""The console's pages, rendered on the server from the library's own objects.

Every function returns :class:`~mesh.console.html.Markup` built with
:func:`~mesh.console.html.el`, so whatever a record, header or exception holds is
escaped. The pages carry no inline script or style (the console's Content-Security-
Policy forbids both); ``static/console.js`` adds live updates and keyboard shortcuts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from confluent_kafka.schema_registry import RegisteredSchema

from mesh import headers as h
from mesh.console.html import Markup, el, join
from mesh.console.metrics import AgentRates
from mesh.console.source import AgentInfo, AgentSample
from mesh.kafka.reader import TailRecord
from mesh.ops.dlq import DeadLetter, RedriveReport, iso
from mesh.ops.trace import Failure, Step, Trace
from mesh.runtime.failure import DeadLetterReason
from mesh.schema.subjects import SubjectInfo

__all__ = [
    "Chrome",
    "OverviewRow",
    "agent_page",
    "chain_page",
    "dead_letter_page",
    "dead_letters_page",
    "error_page",
    "overview_page",
    "overview_rows",
    "record_page",
    "record_rows",
    "redrive_page",
    "schemas_page",
    "subject_page",
    "topic_page",
    "topics_page",
]

_NAV = (
    ("/", "Overview", "o"),
    ("/chain", "Chains", "c"),
    ("/dlq", "Dead letters", "d"),
    ("/topics", "Topics", "t"),
    ("/schemas", "Schemas", "s"),
)


@dataclass(frozen=True)
class Chrome:
    """What every page shows around its content: where the console reads from."""

    app: str | None
    bootstrap: str
    registry: str  # redacted
    writes: bool
    csrf: str


@dataclass(frozen=True)
class OverviewRow:
    agent: AgentInfo
    sample: AgentSample | None
    rates: AgentRates | None
    alerts: list[str]


def _layout(chrome: Chrome, title: str, active: str, *body: Any) -> Markup:
    nav = el(
        "nav",
        el(
            "ul",
            [
                el(
                    "li",
                    el(
                        "a",
                        label,
                        href=href,
                        data_key=key,
                        aria_current="page" if href == active else None,
                    ),
                )
                for href, label, key in _NAV
            ],
        ),
        aria_label="Console",
    )
    search = el(
        "form",
        el("label", "Find a chain", for_="search", class_="sr-only"),
        el(
            "input",
            id="search",
            name="id",
            type="search",
            placeholder="correlation or event id  (press /)",
            autocomplete="off",
        ),
        role="search",
        action="/chain",
        method="get",
    )
    theme = el("button", "◐", id="theme", type="button", title="Light or dark (press L)")
    mode = "writes allowed" if chrome.writes else "read-only"
    footer = el(
        "footer",
        join(
            f"app {chrome.app or '(every mesh group on the cluster)'} · broker ",
            chrome.bootstrap,
            " · registry ",
            chrome.registry,
            f" · {mode} · press ? for keys",
        ),
    )
    keys = el(
        "dialog",
        el("h2", "Keys"),
        el(
            "dl",
            [join(el("dt", "g " + key), el("dd", label)) for _, label, key in _NAV],
            el("dt", "/"),
            el("dd", "find a chain by correlation id"),
            el("dt", "j / k"),
            el("dd", "next / previous row"),
            el("dt", "L"),
            el("dd", "light or dark"),
        ),
        el("form", el("button", "Close"), method="dialog"),
        id="keys",
    )
    return Markup(
        "<!doctype html>"
        + el(
            "html",
            el(
                "head",
                el("meta", charset="utf-8"),
                el("meta", name="viewport", content="width=device-width, initial-scale=1"),
                el("meta", name="csrf", content=chrome.csrf),
                el("title", f"{title} · mesh console"),
                el("link", rel="stylesheet", href="/static/console.css"),
                el("script", src="/static/console.js", defer=True),
            ),
            el(
                "body",
                el("a", "Skip to content", href="#main", class_="skip"),
                el("header", el("a", "mesh console", href="/", class_="brand"), nav, search, theme),
                el("main", *body, id="main", tabindex="-1"),
                footer,
                keys,
            ),
            lang="en",
        )
    )


def _time(epoch_ms: int | None) -> Markup:
    text = iso(epoch_ms)
    return el("time", text or "-", datetime=text)


def _rate(rates: AgentRates | None, key: str) -> str:
    if rates is None or key not in rates.rates:
        return "-"
    return f"{rates.rates[key]:.1f}"


def _chain_link(correlation_id: str | None) -> Markup:
    if not correlation_id:
        return Markup("-")
    return el(
        "a", correlation_id, href="/chain?" + urlencode({"id": correlation_id}), class_="mono"
    )


def _href(*parts: Any) -> str:
    return "/" + "/".join(quote(str(p), safe="") for p in parts)


# -- overview ----------------------------------------------------------------------------


def overview_rows(rows: Sequence[OverviewRow]) -> Markup:
    """The overview's table body, also sent alone by its live stream."""
    if not rows:
        return el("tr", el("td", "No agents found.", colspan="9"))
    out = []
    for row in rows:
        sample, rates = row.sample, row.rates
        dead = sample.dead_letters if sample else None
        state = "alert" if row.alerts else ("warn" if dead else "ok")
        lag = (
            " ".join(f"{t.rsplit('.', 1)[-1]}[{p}]:{n}" for (t, p), n in sorted(sample.lag.items()))
            if sample
            else "-"
        )
        status = "; ".join(row.alerts) or ("dead letters waiting" if dead else "ok")
        out.append(
            el(
                "tr",
                el(
                    "th", el("a", row.agent.name, href=_href("agents", row.agent.name)), scope="row"
                ),
                el("td", _rate(rates, "consumed"), class_="num"),
                el("td", _rate(rates, "handled"), class_="num"),
                el(
                    "td",
                    "-" if rates is None else f"{rates.totals.get('failed', 0):.0f}",
                    class_="num",
                ),
                el("td", "-" if sample is None else str(sample.retries_waiting), class_="num"),
                el("td", "-" if dead is None else str(dead), class_="num"),
                el("td", lag, class_="mono"),
                el("td", "-" if rates is None else str(rates.workers), class_="num"),
                el("td", status, class_="status"),
                class_=f"state-{state}",
                data_agent=row.agent.name,
                data_state=state,
            )
        )
    return join(out)


def overview_page(chrome: Chrome, rows: Sequence[OverviewRow], errors: Sequence[str]) -> Markup:
    head = el(
        "tr",
        [
            el("th", name, scope="col")
            for name in (
                "agent",
                "consumed/s",
                "handled/s",
                "failures",
                "retries waiting",
                "dead letters",
                "lag per partition",
                "workers",
                "status",
            )
        ],
    )
    return _layout(
        chrome,
        "Overview",
        "/",
        el("h1", "Agents"),
        [el("p", error, class_="error", role="alert") for error in errors],
        el(
            "table",
            el("thead", head),
            el("tbody", overview_rows(rows), id="overview-rows"),
            class_="rows",
            data_sse="/events/overview",
            data_sse_target="overview-rows",
        ),
        el(
            "p",
            "A row turns red when dead letters arrived or lag grew in the last five minutes; "
            "rates and workers come from the agents' /metrics (--metrics).",
            class_="hint",
        ),
    )


# -- agent --------------------------------------------------------------------------------


def agent_page(
    chrome: Chrome,
    row: OverviewRow,
    failures: Sequence[DeadLetter],
) -> Markup:
    agent, sample = row.agent, row.sample
    records = sample.records if sample else {}
    lag_by_topic: dict[str, int] = {}
    if sample:
        for (topic, _), n in sample.lag.items():
            lag_by_topic[topic] = lag_by_topic.get(topic, 0) + n
    topics = [
        el(
            "tr",
            el("td", role),
            el("td", el("a", topic, href=_href("topics", topic)), class_="mono"),
            el("td", str(records.get(topic, "-")), class_="num"),
            el("td", str(lag_by_topic.get(topic, "-")) if role == "source" else "", class_="num"),
        )
        for role, names in (
            ("source", agent.sources),
            ("retry", agent.retry_topics),
            ("dead letter", agent.dead_letter_topics),
        )
        for topic in names
    ]
    return _layout(
        chrome,
        agent.name,
        "/",
        el("h1", "Agent ", el("span", agent.name, class_="mono")),
        el(
            "p",
            "; ".join(row.alerts) or "no new dead letters, lag not growing",
            class_="state-alert" if row.alerts else "hint",
            data_state="alert" if row.alerts else "ok",
        ),
        el("p", el("a", "Its dead letters", href="/dlq?" + urlencode({"agent": agent.name}))),
        el("h2", "Topics"),
        el(
            "table",
            el(
                "thead",
                el("tr", [el("th", n, scope="col") for n in ("role", "topic", "records", "lag")]),
            ),
            el("tbody", topics),
            class_="rows",
        ),
        el("h2", "Settings"),
        _settings(agent),
        el("h2", "Latest failures"),
        _failures(failures),
    )


def _settings(agent: AgentInfo) -> Markup:
    described = agent.described
    if described is None:
        return el("p", f"group {agent.group_id}; settings are known with --app.", class_="hint")
    retry = described["retry"]
    items = {
        "group": described["group_id"],
        "consumes": ", ".join(described["consumes"]),
        "emits": ", ".join(described["emits"]) or "-",
        "concurrency": described["concurrency"],
        "timeout": "off" if described["timeout_s"] is None else f"{described['timeout_s']:g} s",
        "retry": (
            f"{retry['attempts']} attempts, {retry['backoff']} from {retry['initial_delay']:g} s "
            f"(x{retry['multiplier']:g}, at most {retry['max_delay']:g} s)"
        ),
        "non-retryable": ", ".join(retry["non_retryable"]) or "-",
        "deadline": "-" if retry["deadline"] is None else f"{retry['deadline']:g} s",
    }
    return el("dl", [join(el("dt", k), el("dd", str(v))) for k, v in items.items()], class_="facts")


def _failures(failures: Sequence[DeadLetter]) -> Markup:
    if not failures:
        return el("p", "None.", class_="hint")
    rows = []
    for letter in failures:
        dead = letter.header(h.DLQ_REASON) is not None
        where = (
            el("a", letter.id, href=_href("dlq", letter.id), class_="mono")
            if dead
            else el("span", letter.id, class_="mono")
        )
        rows.append(
            el(
                "tr",
                el("td", _time(letter.timestamp_ms)),
                el("td", "dead letter" if dead else "retry"),
                el("td", str(letter.header_int(h.ATTEMPT) or "-"), class_="num"),
                el("td", letter.error_class or "-", class_="mono"),
                el("td", letter.header(h.EXCEPTION_MESSAGE) or ""),
                el("td", _chain_link(letter.header(h.CORRELATION_ID))),
                el("td", where),
                class_="state-alert" if dead else "state-warn",
            )
        )
    names = ("time", "kind", "attempt", "exception", "message", "chain", "record")
    return el(
        "table",
        el("thead", el("tr", [el("th", n, scope="col") for n in names])),
        el("tbody", rows),
        class_="rows",
    )


# -- chain --------------------------------------------------------------------------------


def chain_page(chrome: Chrome, query: str, since: str, found: Trace | None) -> Markup:
    form = el(
        "form",
        el(
            "label",
            "Correlation or event id ",
            el("input", name="id", value=query, required=True, size="40", class_="mono"),
        ),
        el("label", " within ", el("input", name="since", value=since, size="4")),
        el("button", "Find"),
        method="get",
        action="/chain",
        class_="filters",
    )
    body: list[Any] = [el("h1", "Chain"), form]
    if found is not None and not found.roots:
        body.append(
            el(
                "p",
                f"No events with correlation id or event id {query} in the last {since} "
                f"({found.scanned} records in {found.topics} topics).",
                class_="error",
            )
        )
    elif found is not None:
        if found.event_id is not None:
            body.append(
                el(
                    "p",
                    "Event ",
                    el("span", found.event_id, class_="mono"),
                    " is in chain ",
                    el(
                        "a",
                        found.correlation_id,
                        href="/chain?" + urlencode({"id": found.correlation_id, "since": since}),
                        class_="mono",
                    ),
                    ".",
                    id="found-by-event",
                )
            )
        body += [
            el(
                "p",
                f"{found.steps} event(s); scanned {found.scanned} records in {found.topics} "
                f"topics in {found.seconds:.2f} s.",
                class_="hint",
            ),
            el("h2", "Tree"),
            el(
                "ul",
                [_step(s, found.event_id) for s in found.roots],
                class_="tree",
                id="chain-tree",
            ),
            el("h2", "Timeline"),
            _timeline(found),
        ]
    return _layout(chrome, "Chain", "/chain", *body)


def _step(step: Step, asked: str | None = None) -> Markup:
    """One event of the tree; the event searched for (*asked*) is marked."""
    latency = "" if step.latency_ms is None else f" +{step.latency_ms} ms"
    return el(
        "li",
        el(
            "a",
            el("strong", step.event_type or "?"),
            " by ",
            el("span", step.produced_by or "?", class_="agent"),
            href=_href("record", step.topic, step.partition, step.offset),
            class_="step asked" if step.event_id == asked else "step",
            data_event=step.event_id,
            aria_current="true" if step.event_id == asked else None,
        ),
        el(
            "span",
            " ",
            _time(step.timestamp_ms),
            f" {step.topic}[{step.partition}]@{step.offset}{latency}",
            class_="hint",
        ),
        el("ul", [_failure(f) for f in step.failures], [_step(c, asked) for c in step.children])
        if step.failures or step.children
        else None,
    )


def _failure(failure: Failure) -> Markup:
    error = f"{failure.error_class or '?'}: {failure.error_message or ''}"
    who = failure.agent or failure.group or "?"
    if failure.kind == "retry":
        return el(
            "li",
            el("span", "retry", class_="badge state-warn"),
            f" {who} attempt {failure.attempt} failed: {error} ",
            _time(failure.timestamp_ms),
        )
    letter = f"{failure.topic}:{failure.partition}:{failure.offset}"
    return el(
        "li",
        el("span", "dead letter", class_="badge state-alert"),
        f" {who} ({failure.reason or '?'}, after {failure.attempt} attempt(s)): {error} ",
        _time(failure.timestamp_ms),
        " ",
        el("a", "open the dead letter", href=_href("dlq", letter), data_letter=letter),
    )


def _timeline(found: Trace) -> Markup:
    entries: list[tuple[int, str, str, str]] = []  # time, kind, what, who

    def walk(step: Step) -> None:
        entries.append(
            (step.timestamp_ms, "event", step.event_type or "?", step.produced_by or "?")
        )
        for f in step.failures:
            what = f"{f.error_class or '?'}: {f.error_message or ''}"
            entries.append((f.timestamp_ms, f.kind, what, f.agent or f.group or "?"))
        for child in step.children:
            walk(child)

    for root in found.roots:
        walk(root)
    entries.sort(key=lambda e: e[0])
    start, end = entries[0][0], entries[-1][0]
    span = max(end - start, 1)
    rows = []
    for at, kind, what, who in entries:
        x = 100 * (at - start) / span
        bar = el(
            "svg",
            el(
                "rect",
                x=f"{min(x, 99):.2f}%",
                y="2",
                width="1%",
                height="12",
                class_=f"mark-{kind}",
            ),
            width="100%",
            height="16",
            role="img",
            aria_label=f"+{at - start} ms",
        )
        state = {"event": "ok", "retry": "warn", "dead-letter": "alert"}[kind]
        rows.append(
            el(
                "tr",
                el("td", f"+{at - start} ms", class_="num"),
                el("td", kind),
                el("td", who),
                el("td", what),
                el("td", bar, class_="bar"),
                class_=f"state-{state}",
            )
        )
    names = ("at", "kind", "agent", "what", "")
    return el(
        "table",
        el("thead", el("tr", [el("th", n, scope="col") for n in names])),
        el("tbody", rows),
        class_="rows timeline",
    )


# -- records ------------------------------------------------------------------------------


def _value(record: TailRecord) -> Markup:
    data = record.to_json()
    if record.value_error is not None:
        return join(
            el("p", f"Cannot decode: {record.value_error}", class_="error"),
            el("pre", data.get("value_base64", "")),
        )
    return el("pre", json.dumps(data["value"], indent=2, ensure_ascii=False), class_="value")


def _headers(headers: Iterable[tuple[str, bytes | None]]) -> Markup:
    rows = [
        el("tr", el("th", name, scope="row", class_="mono"), el("td", el("pre", _text(raw))))
        for name, raw in headers
    ]
    return el("table", el("tbody", rows), class_="rows headers")


def _text(raw: bytes | None) -> str:
    return "-" if raw is None else raw.decode("utf-8", "replace")


def record_page(chrome: Chrome, record: TailRecord) -> Markup:
    where = f"{record.topic}[{record.partition}]@{record.offset}"
    correlation = h.last(record.headers, h.CORRELATION_ID)
    return _layout(
        chrome,
        where,
        "/chain",
        el("h1", "Record ", el("span", where, class_="mono")),
        el(
            "dl",
            el("dt", "time"),
            el("dd", _time(record.timestamp_ms)),
            el("dt", "key"),
            el("dd", _text(record.key), class_="mono"),
            el("dt", "chain"),
            el("dd", _chain_link(None if correlation is None else _text(correlation))),
            class_="facts",
        ),
        el("h2", "Value"),
        _value(record),
        el("h2", "Headers"),
        _headers(record.headers),
    )


# -- dead letters -------------------------------------------------------------------------


def dead_letters_page(
    chrome: Chrome,
    letters: Sequence[DeadLetter],
    agents: Sequence[str],
    filters: dict[str, str],
    topics: int,
) -> Markup:
    def select(name: str, options: Sequence[str]) -> Markup:
        return el(
            "select",
            el("option", "any", value=""),
            [el("option", o, value=o, selected=filters.get(name) == o) for o in options],
            name=name,
            id=f"f-{name}",
        )

    form = el(
        "form",
        el("label", "agent ", select("agent", agents)),
        el("label", " reason ", select("reason", [r.value for r in DeadLetterReason])),
        el(
            "label",
            " exception ",
            el("input", name="error_class", value=filters.get("error_class", ""), size="16"),
        ),
        el(
            "label",
            " within ",
            el(
                "input",
                name="since",
                value=filters.get("since", ""),
                size="4",
                placeholder="e.g. 1h",
            ),
        ),
        el("button", "Filter"),
        method="get",
        action="/dlq",
        class_="filters",
    )
    rows = [
        el(
            "tr",
            el(
                "td",
                el(
                    "input",
                    type="checkbox",
                    name="id",
                    value=letter.id,
                    form="redrive",
                    aria_label=f"select {letter.id}",
                ),
            )
            if chrome.writes
            else None,
            el("td", el("a", letter.id, href=_href("dlq", letter.id), class_="mono")),
            el("td", letter.header(h.DLQ_AGENT) or "-"),
            el("td", letter.header(h.DLQ_REASON) or "-"),
            el("td", letter.error_class or "-", class_="mono"),
            el("td", letter.header(h.EXCEPTION_MESSAGE) or ""),
            el("td", str(letter.header_int(h.ATTEMPT) or "-"), class_="num"),
            el("td", _time(letter.timestamp_ms)),
            el("td", _chain_link(letter.header(h.CORRELATION_ID))),
            el(
                "td",
                str(letter.redrive_count),
                el("span", " redriven", class_="badge state-warn", title=iso(letter.redriven.at_ms))
                if letter.redriven is not None
                else None,
                class_="num",
            ),
            data_letter=letter.id,
        )
        for letter in letters
    ]
    names = [
        "id",
        "agent",
        "reason",
        "exception",
        "message",
        "attempts",
        "failed at",
        "chain",
        "redrives",
    ]
    if chrome.writes:
        names.insert(0, "")
    action: Markup
    if chrome.writes:
        action = el(
            "form",
            el("input", type="hidden", name="csrf", value=chrome.csrf),
            el("button", "Preview redrive of the selected", id="redrive-preview"),
            id="redrive",
            method="post",
            action="/dlq/redrive",
        )
    else:
        action = el(
            "p", "Read-only: start the console with --allow-writes to redrive.", class_="hint"
        )
    return _layout(
        chrome,
        "Dead letters",
        "/dlq",
        el("h1", "Dead letters"),
        form,
        el("p", f"{len(letters)} dead letter(s) in {topics} topic(s).", class_="hint"),
        el(
            "table",
            el("thead", el("tr", [el("th", n, scope="col") for n in names])),
            el("tbody", rows),
            class_="rows",
            id="letters",
        ),
        action,
    )


def dead_letter_page(chrome: Chrome, letter: DeadLetter, record: TailRecord) -> Markup:
    summary = letter.summary()
    facts = [
        "agent",
        "group",
        "reason",
        "error_kind",
        "error_class",
        "error_message",
        "attempts",
        "original_topic",
        "original_partition",
        "original_offset",
        "first_failure",
        "failed_at",
        "event_type",
        "redrive_count",
    ]
    redrive = (
        el(
            "form",
            el("input", type="hidden", name="csrf", value=chrome.csrf),
            el("input", type="hidden", name="id", value=letter.id),
            el("button", "Preview redrive", id="redrive-preview"),
            method="post",
            action="/dlq/redrive",
        )
        if chrome.writes
        else el("p", "Read-only: start the console with --allow-writes to redrive.", class_="hint")
    )
    return _layout(
        chrome,
        letter.id,
        "/dlq",
        el("h1", "Dead letter ", el("span", letter.id, class_="mono")),
        redrive,
        el(
            "dl",
            [
                join(
                    el("dt", k.replace("_", " ")),
                    el("dd", str(summary[k]) if summary[k] is not None else "-"),
                )
                for k in facts
            ],
            el("dt", "chain"),
            el("dd", _chain_link(summary["correlation_id"])),
            el("dt", "key"),
            el("dd", _text(letter.key), class_="mono"),
            class_="facts",
        ),
        el("h2", "Value"),
        _value(record),
        el("h2", "Stack trace"),
        el("pre", letter.header(h.EXCEPTION_STACKTRACE) or "-", class_="trace"),
        el("h2", "Headers"),
        _headers(letter.headers),
    )


def redrive_page(chrome: Chrome, report: RedriveReport, ids: Sequence[str]) -> Markup:
    """The dry run of a redrive (with the form that confirms it), or what it did.

    Dead letters redriven before are listed apart: they go again only when the
    confirmation's "force" box is checked."""
    verb = "would send" if report.dry_run else "sent"
    sent = [
        el(
            "li",
            el("a", letter.id, href=_href("dlq", letter.id), class_="mono"),
            f" {verb} to {letter.original_topic} (redrive {letter.redrive_count + 1}) ",
            _chain_link(letter.header(h.CORRELATION_ID)),
        )
        for letter in report.sent
    ]
    again = "only if forced" if report.dry_run else "not sent: check force to send it again"
    already = [
        el(
            "li",
            el("a", letter.id, href=_href("dlq", letter.id), class_="mono"),
            el("span", "already redriven", class_="badge state-warn"),
            " ",
            _redriven(letter),
            f": {again} ",
            _chain_link(letter.header(h.CORRELATION_ID)),
            data_already=letter.id,
        )
        for letter in report.already
    ]
    skipped = [
        el("li", el("span", letter.id, class_="mono"), f" skipped: {why}")
        for letter, why in report.skipped
    ]
    failed = [
        el("li", el("span", letter.id, class_="mono"), f" failed: {why}", class_="error")
        for letter, why in report.failed
    ]
    summary = (
        f"Matched {report.matched}, {verb} {len(report.sent)}, skipped {len(report.skipped)}"
        + (f", already redriven {len(report.already)}" if report.already else "")
        + (f", failed {len(report.failed)}." if report.failed else ".")
    )
    confirm = None
    if report.dry_run and (report.sent or report.already):
        forced = None
        if report.already:
            forced = el(
                "p",
                el(
                    "label",
                    el("input", type="checkbox", name="force", value="yes", id="redrive-force"),
                    f" Force: also redrive the {len(report.already)} already redriven "
                    "dead letter(s) again",
                ),
            )
        confirm = el(
            "form",
            el("input", type="hidden", name="csrf", value=chrome.csrf),
            el("input", type="hidden", name="confirm", value="yes"),
            [el("input", type="hidden", name="id", value=i) for i in ids],
            forced,
            el(
                "button",
                f"Redrive {len(report.sent)} dead letter(s)"
                + (" (and those forced)" if report.already else ""),
                id="redrive-confirm",
                class_="danger",
            ),
            " ",
            el("a", "Cancel", href="/dlq"),
            method="post",
            action="/dlq/redrive",
        )
    note = (
        "Each goes back to its original topic, where every consumer group sees it again. "
        "The dead letters stay in their topic: Kafka cannot delete one record."
    )
    return _layout(
        chrome,
        "Redrive",
        "/dlq",
        el("h1", "Redrive: dry run" if report.dry_run else "Redrive: done"),
        el("p", summary, id="redrive-summary"),
        el("p", note, class_="hint") if report.dry_run else None,
        el("ul", sent, already, skipped, failed),
        confirm,
    )


def _redriven(letter: DeadLetter) -> Markup:
    mark = letter.redriven
    if mark is None:
        return Markup()
    return join(" at ", _time(mark.at_ms), f" to {mark.to_topic}")


# -- topics -------------------------------------------------------------------------------


def topics_page(chrome: Chrome, sizes: dict[str, tuple[int, int]]) -> Markup:
    rows = [
        el(
            "tr",
            el("td", el("a", name, href=_href("topics", name)), class_="mono"),
            el("td", str(partitions), class_="num"),
            el("td", str(records), class_="num"),
        )
        for name, (partitions, records) in sizes.items()
    ]
    return _layout(
        chrome,
        "Topics",
        "/topics",
        el("h1", "Topics"),
        el(
            "table",
            el(
                "thead",
                el("tr", [el("th", n, scope="col") for n in ("topic", "partitions", "records")]),
            ),
            el("tbody", rows),
            class_="rows",
        ),
    )


def record_rows(records: Sequence[TailRecord]) -> Markup:
    """Rows of a live tail, newest first (also sent alone by the tail's stream)."""
    out = []
    for record in reversed(records):
        event_type = h.last(record.headers, h.EVENT_TYPE)
        out.append(
            el(
                "tr",
                el(
                    "td",
                    el(
                        "a",
                        f"{record.partition}@{record.offset}",
                        href=_href("record", record.topic, record.partition, record.offset),
                    ),
                    class_="mono",
                ),
                el("td", _time(record.timestamp_ms)),
                el("td", _text(record.key), class_="mono"),
                el("td", _text(event_type)),
                el(
                    "td",
                    _value(record),
                    el("details", el("summary", "headers"), _headers(record.headers)),
                ),
            )
        )
    return join(out)


def topic_page(chrome: Chrome, topic: str, query: str) -> Markup:
    form = el(
        "form",
        el("label", "from offset ", el("input", name="offset", type="number", min="0", size="8")),
        el(
            "label",
            " or time ",
            el("input", name="time", placeholder="2026-12-03T12:00:00Z", size="22"),
        ),
        el("button", "Jump"),
        " ",
        el("a", "latest", href=_href("topics", topic)),
        method="get",
        class_="filters",
    )
    return _layout(
        chrome,
        topic,
        "/topics",
        el("h1", "Topic ", el("span", topic, class_="mono")),
        form,
        el("p", "Live: new records appear at the top.", class_="hint", id="tail-status"),
        el(
            "table",
            el(
                "thead",
                el(
                    "tr",
                    [el("th", n, scope="col") for n in ("record", "time", "key", "type", "value")],
                ),
            ),
            el("tbody", id="tail-rows"),
            class_="rows",
            data_sse=_href("events", "topics", topic) + (f"?{query}" if query else ""),
            data_sse_target="tail-rows",
            data_sse_mode="prepend",
        ),
    )


# -- schemas ------------------------------------------------------------------------------


def schemas_page(chrome: Chrome, subjects: Sequence[tuple[SubjectInfo, str]]) -> Markup:
    rows = [
        el(
            "tr",
            el("td", el("a", info.subject, href=_href("schemas", info.subject)), class_="mono"),
            el("td", ", ".join(map(str, info.versions))),
            el("td", str(info.latest_id), class_="num"),
            el("td", level),
        )
        for info, level in subjects
    ]
    names = ("subject", "versions", "latest id", "compatibility")
    return _layout(
        chrome,
        "Schemas",
        "/schemas",
        el("h1", "Schemas"),
        el(
            "table",
            el("thead", el("tr", [el("th", n, scope="col") for n in names])),
            el("tbody", rows),
            class_="rows",
        ),
    )


def subject_page(
    chrome: Chrome,
    subject: str,
    versions: Sequence[int],
    *,
    level: str,
    shown: RegisteredSchema,
    diff: tuple[int, int, list[str]] | None,
) -> Markup:
    def choose(name: str, chosen: int | None) -> Markup:
        return el(
            "select",
            [el("option", str(v), value=str(v), selected=v == chosen) for v in versions],
            name=name,
        )

    old, new = (
        (diff[0], diff[1])
        if diff
        else (versions[-2] if len(versions) > 1 else versions[0], versions[-1])
    )
    text = json.dumps(json.loads(shown.schema.schema_str or "null"), indent=2)
    return _layout(
        chrome,
        subject,
        "/schemas",
        el("h1", "Subject ", el("span", subject, class_="mono")),
        el(
            "p",
            f"compatibility {level}; versions ",
            [join(el("a", str(v), href=f"?version={v}"), " ") for v in versions],
        ),
        el("h2", f"Version {shown.version} (id {shown.schema_id})"),
        el("pre", text, class_="value"),
        el("h2", "Diff"),
        el(
            "form",
            el("label", "from ", choose("old", old)),
            el("label", " to ", choose("new", new)),
            el("button", "Compare"),
            method="get",
            class_="filters",
        ),
        el("ul", [el("li", line) for line in diff[2]] or el("li", "No differences."), id="diff")
        if diff
        else None,
    )


def error_page(chrome: Chrome, status: int, message: str) -> Markup:
    return _layout(
        chrome,
        "Error",
        "",
        el("h1", f"Error {status}"),
        el("p", message, class_="error", role="alert"),
    )
