"""The console's safety rules: escaped values and headers, read-only unless allowed, CSRF
tokens and same-origin on writes, basic auth, and no secret on any page."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Producer
from pydantic import SecretStr
from typer.testing import CliRunner

import mesh.cli
from mesh import Settings
from mesh.config import load_settings
from mesh.console.app import ConsoleOptions
from mesh.errors import ConfigError
from tests.console.support import SCRIPT, Shop, console_client, next_event

ATTACK = '<img src=x onerror="alert(1)">'


def test_a_record_holding_script_renders_as_text_on_every_page(
    failed: Shop, mesh_settings: Settings, mesh_topic: Callable[..., str]
) -> None:
    raw = mesh_topic()
    producer = Producer({"bootstrap.servers": mesh_settings.bootstrap_servers})
    producer.produce(raw, SCRIPT.encode(), ATTACK.encode(), headers=[(ATTACK, SCRIPT.encode())])
    assert producer.flush(10) == 0

    async def body() -> None:
        async with console_client(ConsoleOptions(mesh_settings, app=failed.app)) as client:
            listed = await (await client.get("/dlq")).text()
            (letter,) = re.findall(r'data-letter="([^"]+)"', listed)
            chain = await (
                await client.get("/chain", params={"id": failed.chains["t1"].correlation_id})
            ).text()
            record = re.search(r'href="(/record/[^"]+)"', chain)
            assert record is not None
            stream = await client.get(f"/events/topics/{raw}")
            pages = {
                "dead letter": await (await client.get(f"/dlq/{letter}")).text(),
                "record": await (await client.get(record.group(1))).text(),
                "tail": await next_event(stream),
                "raw record": await (await client.get(f"/record/{raw}/0/0")).text(),
            }
            stream.close()
            for name, page in pages.items():
                assert "<script>alert" not in page, name
                assert "<img src=x" not in page, name
            escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
            assert escaped in pages["dead letter"]  # the decoded value's prompt
            assert escaped in pages["record"]
            assert escaped in pages["raw record"]  # an undecodable value: its header
            assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in pages["tail"]  # key, name
            assert escaped in pages["tail"]

    asyncio.run(body())


def test_pages_forbid_inline_script_and_framing(shop: Shop, mesh_settings: Settings) -> None:
    async def body() -> None:
        async with console_client(ConsoleOptions(mesh_settings, app=shop.app)) as client:
            answer = await client.get("/")
            policy = answer.headers["Content-Security-Policy"]
            assert "script-src 'self'" in policy
            assert "frame-ancestors 'none'" in policy
            assert answer.headers["X-Content-Type-Options"] == "nosniff"
            assert "<script>" not in await answer.text()  # only <script src=...>

    asyncio.run(body())


def test_a_read_only_console_refuses_writes(failed: Shop, mesh_settings: Settings) -> None:
    async def body() -> None:
        async with console_client(ConsoleOptions(mesh_settings, app=failed.app)) as client:
            token = _token(await (await client.get("/dlq")).text())
            letter = f"{failed.dlq}:0:0"
            answer = await client.post("/dlq/redrive", data={"csrf": token, "id": letter})
            assert answer.status == 403
            assert "--allow-writes" in await answer.text()

    asyncio.run(body())


def test_a_redrive_needs_the_csrf_token_and_the_same_origin(
    failed: Shop, mesh_settings: Settings
) -> None:
    options = ConsoleOptions(mesh_settings, app=failed.app, allow_writes=True)

    async def body() -> None:
        async with console_client(options) as client:
            listed = await (await client.get("/dlq")).text()
            token = _token(listed)
            (letter,) = re.findall(r'data-letter="([^"]+)"', listed)
            for data, headers in [
                ({"id": letter}, {}),
                ({"id": letter, "csrf": "guessed"}, {}),
                ({"id": letter, "csrf": token}, {"Origin": "http://evil.example"}),
            ]:
                refused = await client.post("/dlq/redrive", data=data, headers=headers)
                assert refused.status == 403, (data, headers)
            preview = await client.post("/dlq/redrive", data={"id": letter, "csrf": token})
            assert preview.status == 200
            assert "Matched 1, would send 1, skipped 0." in await preview.text()

    asyncio.run(body())


def test_basic_auth_guards_every_page_when_set(shop: Shop, mesh_settings: Settings) -> None:
    options = ConsoleOptions(mesh_settings, app=shop.app, auth="ops:open-sesame")

    async def body() -> None:
        async with console_client(options) as client:
            for path in ("/", "/dlq", "/static/console.js"):
                anonymous = await client.get(path)
                assert anonymous.status == 401
                assert anonymous.headers["WWW-Authenticate"].startswith("Basic")
                wrong = await client.get(path, headers=_basic("ops:guess"))
                assert wrong.status == 401
                right = await client.get(path, headers=_basic("ops:open-sesame"))
                assert right.status == 200, path

    asyncio.run(body())


def test_console_auth_in_the_settings_guards_every_page_and_the_option_wins(
    shop: Shop, mesh_settings: Settings
) -> None:
    settings = mesh_settings.model_copy(update={"console_auth": SecretStr("ops:from-settings")})

    async def body() -> None:
        async with console_client(ConsoleOptions(settings, app=shop.app)) as client:
            for path in ("/", "/dlq", "/static/console.js"):
                assert (await client.get(path)).status == 401
                assert (await client.get(path, headers=_basic("ops:guess"))).status == 401
                right = await client.get(path, headers=_basic("ops:from-settings"))
                assert right.status == 200, path
                assert "from-settings" not in await right.text()
        overridden = ConsoleOptions(settings, app=shop.app, auth="ops:from-flag")
        async with console_client(overridden) as client:
            assert (await client.get("/", headers=_basic("ops:from-settings"))).status == 401
            right = await client.get("/", headers=_basic("ops:from-flag"))
            assert right.status == 200
            assert "from-flag" not in await right.text()

    asyncio.run(body())


def test_console_auth_is_read_from_mesh_toml_and_the_environment_and_never_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MESH_CONSOLE_AUTH", raising=False)
    monkeypatch.delenv("MESH_CONFIG", raising=False)
    Path("mesh.toml").write_text('console_auth = "ops:from-file"\n')
    settings = load_settings()
    assert settings.console_auth is not None
    assert settings.console_auth.get_secret_value() == "ops:from-file"
    assert settings.redacted()["console_auth"] == "ops:**********"
    assert "from-file" not in repr(settings)
    monkeypatch.setenv("MESH_CONSOLE_AUTH", "ops:from-env")
    from_env = load_settings().console_auth
    assert from_env is not None
    assert from_env.get_secret_value() == "ops:from-env"
    shown = CliRunner().invoke(mesh.cli.app, ["config", "show"])
    assert shown.exit_code == 0, shown.output
    assert "ops:**********" in shown.stdout
    assert "from-env" not in shown.output
    monkeypatch.setenv("MESH_CONSOLE_AUTH", "just-a-user")
    with pytest.raises(ConfigError, match="console_auth: use USER:PASSWORD"):
        load_settings()


def test_no_secret_reaches_a_page(failed: Shop, mesh_settings: Settings) -> None:
    registry = mesh_settings.registry_url.replace("://", "://reader:registry-s3cret@")
    kafka = {"sasl.username": "mesh", "sasl.password": "kafka-s3cret"}
    working = mesh_settings.model_copy(update={"registry_url": registry, "kafka": kafka})
    broken = working.model_copy(
        update={"registry_url": "http://reader:registry-s3cret@127.0.0.1:9/"}
    )

    async def body() -> None:
        seen = []
        async with console_client(ConsoleOptions(working, app=failed.app)) as client:
            for path in ("/", "/agents/planner", "/dlq", "/topics", "/schemas"):
                answer = await client.get(path)
                assert answer.status == 200, path
                seen.append(await answer.text())
        async with console_client(ConsoleOptions(broken, app=failed.app)) as client:
            failing = await client.get("/schemas")
            assert failing.status == 502
            seen.append(await failing.text())
        for page in seen:
            assert "registry-s3cret" not in page
            assert "kafka-s3cret" not in page
        assert "reader:**********@" in seen[0]  # the footer names the registry, masked

    asyncio.run(body())


def _basic(credentials: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


def _token(page: str) -> str:
    found = re.search(r'<meta name="csrf" content="([^"]+)">', page)
    assert found is not None
    return found.group(1)
