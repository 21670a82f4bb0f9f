"""Redrive from the console: select a dead letter, see the dry run, confirm, and the
chain completes once the agent is fixed."""

from __future__ import annotations

import asyncio
import re

from mesh import Settings
from mesh.console.app import ConsoleOptions
from mesh.kafka.reader import Tail
from tests.console.support import Shop, console_client
from tests.support import read_topic, running


def _held(settings: Settings, topic: str) -> int:
    with Tail(settings, topic, from_beginning=True, to_end=True) as tail:
        return sum(1 for _ in tail.messages())


def test_a_redrive_is_previewed_then_sent_on_confirmation_and_the_chain_completes(
    failed: Shop, mesh_settings: Settings
) -> None:
    options = ConsoleOptions(mesh_settings, app=failed.app, allow_writes=True)
    chain = failed.chains["t1"]
    before = _held(mesh_settings, failed.tasks.topic())

    async def body() -> None:
        async with console_client(options) as client:
            listed = await (await client.get("/dlq")).text()
            assert 'type="checkbox"' in listed
            token = re.search(r'name="csrf" value="([^"]+)"', listed)
            assert token is not None
            (letter,) = re.findall(r'data-letter="([^"]+)"', listed)
            form = {"csrf": token.group(1), "id": letter}

            preview = await (await client.post("/dlq/redrive", data=form)).text()
            assert "Redrive: dry run" in preview
            assert "Matched 1, would send 1, skipped 0." in preview
            assert f'name="id" value="{letter}"' in preview
            assert 'id="redrive-confirm"' in preview
            assert _held(mesh_settings, failed.tasks.topic()) == before  # nothing sent yet

            failed.broken.clear()  # the planner is fixed
            with running(failed.app):
                done = await client.post("/dlq/redrive", data={**form, "confirm": "yes"})
                text = await done.text()
                assert "Redrive: done" in text
                assert "Matched 1, sent 1, skipped 0." in text
                read_topic(mesh_settings.bootstrap_servers, failed.plans.topic(), 2, partitions=3)

            page = await (await client.get("/chain", params={"id": chain.correlation_id})).text()
            assert "test.console.PlanReady" in page  # the chain went on past the planner
            assert 'by <span class="agent">planner</span>' in page
            again = await (await client.get("/dlq/" + letter)).text()
            assert "redrive count" in again

            # Redriven once: listed as such, shown apart in a dry run, sent only if forced.
            listed = await (await client.get("/dlq")).text()
            row = re.search(rf'<tr data-letter="{re.escape(letter)}">.*?</tr>', listed)
            assert row is not None
            assert "redriven</span>" in row.group(0)
            preview = await (await client.post("/dlq/redrive", data=form)).text()
            assert "Matched 1, would send 0, skipped 0, already redriven 1." in preview
            assert f'data-already="{letter}"' in preview
            assert "already redriven</span>" in preview
            assert 'type="checkbox" name="force" value="yes" id="redrive-force"' in preview
            assert 'id="redrive-confirm"' in preview
            held = _held(mesh_settings, failed.tasks.topic())
            unforced = {**form, "confirm": "yes"}
            text = await (await client.post("/dlq/redrive", data=unforced)).text()
            assert "Matched 1, sent 0, skipped 0, already redriven 1." in text
            assert "not sent: check force to send it again" in text
            assert _held(mesh_settings, failed.tasks.topic()) == held
            forced = {**unforced, "force": "yes"}
            text = await (await client.post("/dlq/redrive", data=forced)).text()
            assert "Matched 1, sent 1, skipped 0." in text
            assert _held(mesh_settings, failed.tasks.topic()) == held + 1
            dry_force = {**form, "force": "yes"}  # force counts only with the confirmation
            text = await (await client.post("/dlq/redrive", data=dry_force)).text()
            assert "Matched 1, would send 0, skipped 0, already redriven 1." in text

    asyncio.run(body())
