"""Every Kafka client mesh creates is configured by mesh.kafka.clients, with what applies to it."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

import mesh
from mesh.config import Settings
from mesh.kafka import clients
from mesh.kafka.clients import admin_config, agent_consumer_config, producer_config, reader_config

SECURITY = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "mesh",
    "sasl.password": "hunter2",
    "ssl.ca.location": "/etc/ssl/certs/ca-certificates.crt",
}
CONSUMER_ONLY = {"session.timeout.ms": 30000, "fetch.min.bytes": 2, "max.poll.interval.ms": 60000}
PRODUCER_ONLY = {"linger.ms": 20, "batch.size": 65536, "message.timeout.ms": 60000}


def _profiles(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each profile, named by the clients built from it (see mesh/kafka/clients.py)."""
    return {
        "agent consumer, delay forwarder": agent_consumer_config(settings, group_id="g"),
        "tail, replay, trace, dlq, lag reader": reader_config(settings, "test"),
        "producer (outputs, retries, dead letters, replay copies)": producer_config(settings),
        "admin (topics, offsets, lag), registry base": admin_config(settings),
    }


def test_the_users_sasl_and_ssl_properties_reach_every_client_profile() -> None:
    settings = Settings(bootstrap_servers="kafka:9093", broker="kafka", kafka=SECURITY)
    for profile, conf in _profiles(settings).items():
        assert {key: conf.get(key) for key in SECURITY} == SECURITY, profile
        assert conf["bootstrap.servers"] == "kafka:9093", profile


def test_each_profile_gets_only_the_users_properties_that_apply_to_its_client() -> None:
    settings = Settings(broker="kafka", kafka={**SECURITY, **CONSUMER_ONLY, **PRODUCER_ONLY})
    consumers = [agent_consumer_config(settings, group_id="g"), reader_config(settings, "test")]
    for conf in consumers:
        assert CONSUMER_ONLY.items() <= conf.items()
        assert not PRODUCER_ONLY.keys() & conf.keys()
    producer = producer_config(settings)
    assert PRODUCER_ONLY.items() <= producer.items()
    assert not CONSUMER_ONLY.keys() & producer.keys()
    assert not (CONSUMER_ONLY.keys() | PRODUCER_ONLY.keys()) & admin_config(settings).keys()


@pytest.fixture
def confwarn() -> Any:
    """The CONFWARN lines librdkafka logs for the clients given ``"logger": confwarn.logger``."""

    class Lines(logging.Handler):
        def __init__(self) -> None:
            super().__init__()
            self.logger = logging.getLogger(f"test.confwarn.{id(self)}")
            self.logger.addHandler(self)
            self.logger.propagate = False
            self.seen: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            if "CONFWARN" in record.getMessage():
                self.seen.append(record.getMessage())

    lines = Lines()
    yield lines
    lines.logger.removeHandler(lines)


def test_no_client_warns_about_a_property_meant_for_another_kind(
    mesh_bootstrap_servers: str, confwarn: Any
) -> None:
    settings = Settings(
        bootstrap_servers=mesh_bootstrap_servers, kafka={**CONSUMER_ONLY, **PRODUCER_ONLY}
    )
    logged = {"logger": confwarn.logger}
    consumer = Consumer({**agent_consumer_config(settings, group_id="g"), **logged})
    reader = Consumer({**reader_config(settings, "test"), **logged})
    producer = Producer({**producer_config(settings), **logged})
    admin = AdminClient({**admin_config(settings), **logged})
    for client in (consumer, reader, producer, admin):
        client.poll(0.2)  # librdkafka's log lines are served by poll
    consumer.close()
    reader.close()
    assert confwarn.seen == []


# --- nothing bypasses mesh.kafka.clients -------------------------------------------------

_CLIENT_CLASSES = {"Consumer", "Producer", "AdminClient"}
_PROFILES = set(clients.__all__)

#: Clients whose configuration is not a call to a profile, and the name it must come
#: from. The registry's clients start from ``kafka``, which ``mesh registry serve`` fills
#: with ``admin_config(settings)``; compat's probes use ``properties``, the user's
#: ``[kafka]`` table (it cannot import mesh.kafka.clients, which imports it).
_ALLOWED: dict[str, set[str]] = {
    "mesh/runtime/worker.py": {"consumer_config"},  # agent_consumer_config, from Mesh.serve
    "mesh/registry/reader.py": {"kafka"},
    "mesh/registry/election.py": {"kafka"},
    "mesh/registry/writer.py": {"kafka", "_config"},  # _config: built from kafka
    "mesh/registry/server.py": {"kafka"},
    "mesh/kafka/compat.py": {"properties"},
    "mesh/config.py": {"_PROBE"},  # checks the [kafka] table; the client is never created
    "mesh/dev/stack.py": {"bootstrap"},  # is the embedded dev broker up yet? no security
    "mesh/testing.py": {"mesh_bootstrap_servers"},  # the pytest plugin's own admin client
}


def _client_calls(root: Path) -> list[tuple[str, int, ast.expr | None]]:
    calls = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in _CLIENT_CLASSES:
                relative = path.relative_to(root.parent).as_posix()
                calls.append((relative, node.lineno, node.args[0] if node.args else None))
    return calls


def _names(expr: ast.expr) -> set[str]:
    return {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(expr)
            if isinstance(n, ast.Name | ast.Attribute)}  # fmt: skip


def _from_profile(config: ast.expr) -> bool:
    """A call to a profile, or a dict spreading one (``{**admin_config(s), "x": 1}``)."""
    if isinstance(config, ast.Call):
        return bool(_names(config.func) & _PROFILES)
    if isinstance(config, ast.Dict):
        spread = [v for k, v in zip(config.keys, config.values, strict=True) if k is None]
        return any(_from_profile(v) for v in spread)
    return False


def test_no_module_builds_a_kafka_client_from_a_configuration_of_its_own() -> None:
    root = Path(mesh.__file__).parent
    calls = _client_calls(root)
    assert len(calls) > 10  # the scan sees mesh's clients
    bypassing = []
    for path, line, config in calls:
        if config is None:
            bypassing.append(f"{path}:{line}: no configuration")
        elif _from_profile(config):
            continue
        elif not _ALLOWED.get(path, set()) & _names(config):
            bypassing.append(f"{path}:{line}: {ast.unparse(config)}")
    assert bypassing == [], "configure these clients through mesh.kafka.clients"


def test_the_registry_server_starts_from_the_admin_profile() -> None:
    source = (Path(mesh.__file__).parent / "cli" / "registry.py").read_text()
    [call] = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "RegistryConfig"
    ]
    [kafka] = [kw.value for kw in call.keywords if kw.arg == "kafka"]
    assert ast.unparse(kafka) == "admin_config(settings)"
