"""The console's pages through aiohttp's test client, on a real app's records (real broker
and registry): overview, agent, chain, record, dead letters, topics and schemas."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime, timedelta

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient

from mesh import Settings
from mesh.console.app import ConsoleOptions
from mesh.dev.stack import free_port
from mesh.runtime.status import observed
from tests.console.support import Shop, console_client, next_event
from tests.support import read_topic, running


def test_the_overview_lists_every_agent_with_its_dead_letters_and_lag(
    failed: Shop, mesh_settings: Settings
) -> None:
    async def body() -> None:
        async with console_client(ConsoleOptions(mesh_settings, app=failed.app)) as client:
            answer = await client.get("/")
            assert answer.status == 200
            page = await answer.text()
            assert 'data-agent="planner"' in page
            assert 'data-agent="auditor"' in page
            planner = _row(page, "planner")
            assert 'data-state="warn"' in planner  # dead letters wait; none arrived since
            assert "dead letters waiting" in planner
            assert re.search(r'<td class="num">1</td>', planner)  # one dead letter
            assert 'href="/agents/planner"' in planner
            assert 'data-state="ok"' in _row(page, "auditor")
            assert "tasks[0]:0" in planner  # lag per partition, all consumed

    asyncio.run(body())


def test_a_row_turns_red_when_dead_letters_arrive_and_the_stream_says_so(
    shop: Shop, mesh_settings: Settings
) -> None:
    async def body() -> None:
        options = ConsoleOptions(mesh_settings, app=shop.app, refresh_s=0.2)
        async with console_client(options) as client:
            assert 'data-state="ok"' in _row(await (await client.get("/")).text(), "planner")
            stream = await client.get("/events/overview")
            assert stream.headers["Content-Type"] == "text/event-stream"
            with running(shop.app):
                shop.publish("t1")
                while True:  # the stream sends the rows at each refresh, until the row is red
                    event = await next_event(stream)
                    if 'data-state="alert"' in _row(event, "planner"):
                        break
            assert "1 new dead letter(s)" in _row(event, "planner")
            stream.close()

    asyncio.run(body())


def test_without_an_app_the_overview_finds_mesh_groups_and_reads_the_agents_metrics(
    shop: Shop, mesh_settings: Settings
) -> None:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/metrics"
    gone = f"http://127.0.0.1:{free_port()}/metrics"  # a worker that stopped
    options = ConsoleOptions(mesh_settings, metrics_urls=[endpoint, gone], refresh_s=0.2)
    planner = shop.app.group_id("planner")

    async def body() -> None:
        async with console_client(options) as client:
            stream = await client.get("/events/overview")
            while True:  # rates need two scrapes
                row = _row(await next_event(stream), re.escape(planner))
                if '<td class="num">-</td>' not in row:
                    break
            stream.close()
            page = await (await client.get("/")).text()
            assert f'href="/agents/{planner}"' in page
            assert f'<p class="error" role="alert">{gone}: ' in page
            assert f'data-agent="{shop.app.group_id("auditor")}"' in page
            cells = re.findall(r'<td class="num">([^<]*)</td>', row)
            consumed, handled, failures, waiting, dead, workers = cells
            assert re.fullmatch(r"\d+\.\d", consumed), consumed  # per second, from /metrics
            assert re.fullmatch(r"\d+\.\d", handled), handled
            assert (failures, waiting, dead, workers) == ("0", "0", "0", "1")
            agent = await (await client.get(f"/agents/{planner}")).text()
            assert f"group {planner}; settings are known with --app." in agent
            assert shop.dlq in agent

    with (
        observed(shop.app, port=port, host="127.0.0.1") as metrics,
        running(shop.app, metrics=metrics),
    ):
        shop.publish("t2")
        read_topic(mesh_settings.bootstrap_servers, shop.plans.topic(), 1, partitions=3)
        asyncio.run(body())


def test_the_agent_page_shows_its_topics_settings_and_latest_failures(
    failed: Shop, mesh_settings: Settings
) -> None:
    async def body() -> None:
        async with console_client(ConsoleOptions(mesh_settings, app=failed.app)) as client:
            page = await (await client.get("/agents/planner")).text()
            assert failed.tasks.topic() in page
            assert f"{failed.tasks.topic()}.{failed.app.group_id('planner')}.retry.200ms" in page
            assert failed.dlq in page
            assert "2 attempts, fixed from 0.2 s" in page
            assert "concurrency" in page
            assert "ValueError" in page
            assert "cannot plan t1" in page
            kinds = re.findall(r'<td>(retry|dead letter)</td><td class="num">(\d)</td>', page)
            assert kinds == [("dead letter", "2"), ("retry", "1")]  # newest first, attempts
            assert failed.chains["t1"].correlation_id in page
            missing = await client.get("/agents/nobody")
            assert missing.status == 404
            assert "no agent &#x27;nobody&#x27;" in await missing.text()

    asyncio.run(body())


def test_the_chain_page_shows_the_tree_timeline_and_a_link_to_the_dead_letter(
    failed: Shop, mesh_settings: Settings
) -> None:
    async def body() -> None:
        async with console_client(ConsoleOptions(mesh_settings, app=failed.app)) as client:
            chain = failed.chains["t1"]
            page = await (await client.get("/chain", params={"id": chain.correlation_id})).text()
            assert "1 event(s)" in page
            assert "test.console.TaskCreated" in page
            assert f'data-event="{chain.event_id}"' in page
            assert "retry</span> " + failed.app.group_id("planner") + " attempt 1 failed" in page
            assert "(exhausted, after 2 attempt(s)): ValueError: cannot plan t1" in page
            letter = re.search(r'data-letter="([^"]+)"', page)
            assert letter is not None
            assert letter.group(1).startswith(failed.dlq + ":")
            assert 'class="rows timeline"' in page
            record = re.search(r'href="(/record/[^"]+)"', page)
            assert record is not None
            shown = await (await client.get(record.group(1))).text()
            assert chain.correlation_id in shown
            assert "mesh.event-id" in shown
            none = await (await client.get("/chain", params={"id": "no-such-chain"})).text()
            assert "No events with correlation id or event id no-such-chain" in none

            planned = failed.chains["t2"]
            page = await (await client.get("/chain", params={"id": planned.correlation_id})).text()
            assert 'id="found-by-event"' not in page
            root, plan = re.findall(r'data-event="([^"]+)"', page)  # TaskCreated -> PlanReady
            assert root == planned.event_id
            page = await (await client.get("/chain", params={"id": plan})).text()
            found_by = re.search(r'<p id="found-by-event">(.*?)</p>', page)
            assert found_by is not None
            assert f'Event <span class="mono">{plan}</span> is in chain' in found_by.group(1)
            assert f">{planned.correlation_id}</a>" in found_by.group(1)
            assert re.findall(r'data-event="([^"]+)"', page) == [root, plan]
            asked = re.findall(r'<a [^>]*class="step asked"[^>]*>', page)
            assert len(asked) == 1
            assert f'data-event="{plan}"' in asked[0]
            assert 'aria-current="true"' in asked[0]

    asyncio.run(body())


def test_the_dead_letter_pages_filter_and_show_value_headers_and_stack_trace(
    failed: Shop, mesh_settings: Settings
) -> None:
    async def body() -> None:
        async with console_client(ConsoleOptions(mesh_settings, app=failed.app)) as client:
            listed = await (await client.get("/dlq")).text()
            ids = re.findall(r'data-letter="([^"]+)"', listed)
            assert len(ids) == 1
            assert "cannot plan t1" in listed
            assert "Read-only" in listed
            assert 'type="checkbox"' not in listed
            for query, count in [
                ({"agent": "planner"}, 1),
                ({"agent": "auditor"}, 0),
                ({"reason": "exhausted"}, 1),
                ({"reason": "fatal"}, 0),
                ({"error_class": "ValueError"}, 1),
                ({"error_class": "KeyError"}, 0),
                ({"since": "1h"}, 1),
            ]:
                page = await (await client.get("/dlq", params=query)).text()
                assert len(re.findall(r'data-letter="', page)) == count, query
            bad = await client.get("/dlq", params={"reason": "bored"})
            assert bad.status == 400
            shown = await (await client.get(f"/dlq/{ids[0]}")).text()
            assert "Traceback (most recent call last)" in shown
            assert "ValueError: cannot plan t1" in shown
            assert "mesh.dlq.reason" in shown
            assert "&quot;task_id&quot;: &quot;t1&quot;" in shown
            assert failed.chains["t1"].correlation_id in shown

    asyncio.run(body())


def test_the_topics_page_lists_topics_and_a_topic_streams_its_records(
    failed: Shop, mesh_settings: Settings
) -> None:
    async def body() -> None:
        async with console_client(ConsoleOptions(mesh_settings, app=failed.app)) as client:
            listed = await (await client.get("/topics")).text()
            assert failed.tasks.topic() in listed
            assert failed.dlq in listed
            page = await (await client.get(f"/topics/{failed.plans.topic()}")).text()
            assert f'data-sse="/events/topics/{failed.plans.topic()}"' in page
            stream = await client.get(f"/events/topics/{failed.plans.topic()}")
            event = await next_event(stream)
            assert "&quot;steps&quot;: [" in event
            assert "test.console.PlanReady" in event
            stream.close()
            an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
            since = await client.get(
                f"/events/topics/{failed.plans.topic()}", params={"time": an_hour_ago}
            )
            assert "test.console.PlanReady" in await next_event(since)
            since.close()
            later = await client.get(f"/events/topics/{failed.plans.topic()}?offset=5")
            assert later.status == 200
            later.close()
            wrong = await client.get(f"/topics/{failed.plans.topic()}", params={"time": "noon"})
            assert wrong.status == 400

    asyncio.run(body())


def test_the_schemas_page_shows_subjects_levels_versions_and_a_diff(
    failed: Shop, mesh_settings: Settings
) -> None:
    subject = f"{failed.plans.topic()}-value"
    client = SchemaRegistryClient(mesh_settings.registry_config())
    first = json.loads(client.get_latest_version(subject).schema.schema_str or "{}")
    extra = {"name": "owner", "type": "string", "default": ""}
    client.register_schema(
        subject, Schema(json.dumps({**first, "fields": [*first["fields"], extra]}), "AVRO")
    )

    async def body() -> None:
        async with console_client(ConsoleOptions(mesh_settings, app=failed.app)) as http:
            listed = await (await http.get("/schemas")).text()
            assert subject in listed
            assert "BACKWARD" in listed
            page = await (await http.get(f"/schemas/{subject}")).text()
            assert "Version 2" in page
            assert "&quot;owner&quot;" in page
            assert "field &#x27;owner&#x27;: in version 2, not in version 1" in page
            older = await (await http.get(f"/schemas/{subject}", params={"version": "1"})).text()
            assert "Version 1" in older
            same = await http.get(f"/schemas/{subject}", params={"old": "2", "new": "2"})
            assert "No differences." in await same.text()

    asyncio.run(body())


def _row(page: str, agent: str) -> str:
    match = re.search(rf'<tr[^>]*data-agent="{agent}"[^>]*>.*?</tr>', page, re.S)
    assert match is not None, page
    return match.group(0)
