import json
from pathlib import Path

import pytest

from mesh.config import AgentSettings, Settings, load_settings, parse_duration
from mesh.errors import ConfigError
from mesh.kafka.clients import producer_config


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("MESH_BOOTSTRAP_SERVERS", "MESH_REGISTRY_URL", "MESH_CONFIG", "MESH_KAFKA"):
        monkeypatch.delenv(name, raising=False)


def write(text: str) -> Path:
    path = Path("mesh.toml")
    path.write_text(text)
    return path


def test_defaults_without_a_file() -> None:
    settings = load_settings()
    assert settings.bootstrap_servers == "127.0.0.1:9092"
    assert settings.registry_url == "http://127.0.0.1:8081"
    assert settings.topics.partitions == 3


def test_file_then_env_then_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    write('bootstrap_servers = "file:9092"\nregistry_url = "http://file:8081"\n')
    assert load_settings().bootstrap_servers == "file:9092"
    monkeypatch.setenv("MESH_BOOTSTRAP_SERVERS", "env:9092")
    settings = load_settings()
    assert settings.bootstrap_servers == "env:9092"
    assert settings.registry_url == "http://file:8081"
    assert load_settings(bootstrap_servers="flag:9092").bootstrap_servers == "flag:9092"
    assert load_settings(bootstrap_servers=None).bootstrap_servers == "env:9092"


def test_kafka_properties_pass_through_and_secrets_are_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write('[kafka]\n"security.protocol" = "SASL_SSL"\n"sasl.mechanism" = "PLAIN"\n')
    monkeypatch.setenv("MESH_KAFKA", '{"sasl.username": "u", "sasl.password": "hunter2"}')
    monkeypatch.setenv("MESH_REGISTRY_AUTH", "alice:s3cret")
    settings = load_settings()
    conf = settings.kafka_config(**{"group.id": "g"})
    assert conf["sasl.password"] == "hunter2"
    assert conf["group.id"] == "g"
    assert settings.registry_config()["basic.auth.user.info"] == "alice:s3cret"
    shown = repr(settings.redacted())
    assert "hunter2" not in shown
    assert "s3cret" not in shown
    assert "hunter2" not in repr(settings)
    assert settings.redacted()["registry_auth"] == "alice:**********"


def test_env_file_wins_over_file_for_kafka_table(monkeypatch: pytest.MonkeyPatch) -> None:
    write('[kafka]\n"client.id" = "from-file"\n')
    monkeypatch.setenv("MESH_KAFKA", '{"client.id": "from-env"}')
    assert load_settings().kafka["client.id"] == "from-env"


def test_agent_section_and_nested_env(monkeypatch: pytest.MonkeyPatch) -> None:
    write('[agents.writer]\nconcurrency = 64\ntimeout = "30s"\n')
    monkeypatch.setenv("MESH_TOPICS__PARTITIONS", "6")
    settings = load_settings()
    assert settings.agent("writer").concurrency == 64
    assert settings.agent("writer").timeout == 30.0
    assert settings.agent("unknown").concurrency == 100
    assert settings.topics.partitions == 6


def test_invalid_toml_names_file_and_line() -> None:
    write('bootstrap_servers = "a"\nregistry_url = \n')
    with pytest.raises(ConfigError, match=r"mesh\.toml: invalid TOML: .*line 2"):
        load_settings()


def test_invalid_value_names_file_key_and_reason() -> None:
    write("[agents.writer]\nconcurrency = 0\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == (
        "mesh.toml: agents.writer.concurrency: Input should be greater than or equal to 1"
    )


def test_unknown_key_is_reported() -> None:
    write("[topics]\npartitons = 3\n")
    with pytest.raises(ConfigError, match=r"mesh\.toml: topics\.partitons: unknown key"):
        load_settings()


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_TOPICS__PARTITIONS", "many")
    with pytest.raises(ConfigError, match=r"environment variable MESH_TOPICS: topics\.partitions"):
        load_settings()


def test_explicit_missing_file_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESH_CONFIG", "nope.toml")
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("2h", 7200.0), ("1d", 86400.0), (1.5, 1.5)],
)
def test_parse_duration(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1s", "5 weeks", True])
def test_parse_duration_rejects(text: str | bool) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_producer_tuning_is_the_users_and_durability_is_not() -> None:
    settings = Settings(kafka={"compression.type": "lz4", "acks": "1", "enable.idempotence": False})
    conf = producer_config(settings, **{"delivery.report.only.error": True})
    assert conf["compression.type"] == "lz4"  # the user's tuning wins over mesh's default
    assert conf["linger.ms"] == 5  # mesh's default where the user is silent
    assert conf["delivery.report.only.error"] is True
    assert (conf["acks"], conf["enable.idempotence"]) == ("all", True)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('"linger.ms" = "soon"', '"queue.buffering.max.ms" (librdkafka\'s name for linger.ms)'),
        ('"lingr.ms" = 5', 'No such configuration property: "lingr.ms"'),
        ('"linger.ms" = -5', "outside allowed range"),
    ],
)
def test_a_kafka_property_librdkafka_refuses_names_the_file_and_the_key(
    line: str, says: str
) -> None:
    write(f"[kafka]\n{line}\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    [message] = str(info.value).splitlines()
    key = line.split(" = ", maxsplit=1)[0]
    assert message.startswith(f"mesh.toml: kafka: {key}: "), message
    assert says in message


def test_a_kafka_property_refused_from_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    write('[kafka]\n"client.id" = "mesh"\n')
    monkeypatch.setenv("MESH_KAFKA", '{"compression.type": "zip"}')
    with pytest.raises(ConfigError, match=r'^environment variable MESH_KAFKA: kafka: "compression'):
        load_settings()


def test_invalid_json_in_mesh_kafka_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESH_KAFKA", "{bad")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("environment variable MESH_KAFKA: not valid JSON: ")
    assert "\n" not in str(info.value)


_SECRETS = {
    "sasl.password": "hunter2",
    "ssl.key.password": "k3y-pass",
    "ssl.keystore.password": "st0re-pass",
    "ssl.key.pem": "-----BEGIN PRIVATE KEY-----abc",
    "sasl.oauthbearer.client.secret": "0auth-secret",
}


def test_no_kafka_secret_is_shown_in_redacted_settings_repr_or_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MESH_KAFKA", json.dumps({**_SECRETS, "sasl.username": "mesh"}))
    settings = load_settings()
    assert settings.kafka_config()["sasl.password"] == "hunter2"  # the clients get them
    shown = [repr(settings.redacted()), repr(settings), str(settings)]
    monkeypatch.setenv("MESH_KAFKA", json.dumps({**_SECRETS, "linger.ms": "soon"}))
    with pytest.raises(ConfigError) as info:  # an error report about the same table
        load_settings()
    shown.append(str(info.value))
    for secret in _SECRETS.values():
        assert not any(secret in text for text in shown), secret
    assert settings.redacted()["kafka"]["sasl.username"] == "mesh"


def test_handlers_get_a_five_minute_timeout_unless_turned_off() -> None:
    assert AgentSettings().timeout == 300.0
    assert AgentSettings(timeout="off").timeout is None
    assert AgentSettings(timeout=0).timeout is None
    assert AgentSettings(timeout="30s").timeout == 30.0
