"""Settings: one object, read from ``mesh.toml`` and ``MESH_*`` environment variables.

Precedence, highest first: explicit overrides (CLI flags), environment variables,
the config file, defaults. Environment variables use the ``MESH_`` prefix and ``__``
for nesting (``MESH_TOPICS__PARTITIONS=6``); ``MESH_KAFKA`` takes a JSON object of
librdkafka properties, which is how SASL/SSL settings reach Kafka unchanged.
"""

from __future__ import annotations

import contextvars
import logging
import os
import random
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

from confluent_kafka import KafkaException, Producer
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from mesh.errors import ConfigError
from mesh.logs import RepeatFilter

__all__ = [
    "AgentSettings",
    "Duration",
    "RetryPolicy",
    "Settings",
    "TopicDefaults",
    "load_settings",
    "parse_duration",
    "redact_url",
]

CONFIG_FILE_ENV = "MESH_CONFIG"
DEFAULT_CONFIG_FILE = "mesh.toml"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_MASK = "**********"
_KAFKA_LOG = logging.getLogger("mesh.kafka")
#: Every client's lines, the broker-kind probe's too (:mod:`mesh.kafka.compat`): without
#: a broker librdkafka reports each reconnect attempt, about 20 lines/s per client.
_KAFKA_LOG.addFilter(RepeatFilter())
_SECRET_KEY = re.compile(r"password|secret|token|\.key(\.|$)|credentials", re.IGNORECASE)


def parse_duration(value: str | float) -> float:
    """Parse ``"250ms"``, ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '30s', not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"invalid duration {value!r}: use e.g. '250ms', '30s', '5m', '2h'")
        seconds = float(match.group(1)) * _UNIT_S[match.group(2) or "s"]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


#: A duration in seconds, written in config as ``"30s"``, ``"5m"`` or a number.
Duration = Annotated[float, BeforeValidator(parse_duration)]


def parse_timeout(value: str | float | None) -> float | None:
    """A time limit: a duration, or ``"off"`` (also ``0``, ``None``) for none."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("off", "none")):
        return None
    return parse_duration(value) or None


#: A time limit that ``"off"`` (or 0) turns off: None.
Timeout = Annotated[float | None, BeforeValidator(parse_timeout)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TopicDefaults(_Section):
    """How mesh creates the topics it needs."""

    partitions: int = Field(default=3, ge=1)
    #: -1 takes the broker's ``default.replication.factor`` (Kafka 2.4+).
    replication_factor: int = Field(default=-1, ge=-1)
    retention_ms: int | None = Field(default=None, ge=-1)

    @model_validator(mode="after")
    def _replication_is_not_zero(self) -> Self:
        if self.replication_factor == 0:
            raise ValueError("replication_factor must be -1 (the broker's default) or at least 1")
        return self


class RetryPolicy(_Section):
    """How often and how late a failed event is tried again (``[agents.NAME.retry]``)."""

    #: Tries in all, the first one included; 1 disables retries.
    attempts: int = Field(default=3, ge=1, le=100)
    backoff: Literal["exponential", "fixed"] = "exponential"
    initial_delay: Duration = Field(default=1.0, gt=0)
    multiplier: float = Field(default=2.0, ge=1.0, le=100.0)
    max_delay: Duration = Field(default=300.0, gt=0)
    #: Extra random delay, as a fraction of the delay. Non-zero jitter spreads retries of
    #: a burst, at the cost of records waiting behind a slightly later head.
    jitter: float = Field(default=0.0, ge=0.0, le=1.0)
    #: Exception classes (simple or qualified names, base classes match) that go
    #: straight to the dead-letter topic.
    non_retryable: tuple[str, ...] = ()
    #: Longest time a record may spend in retries, counted from its first failure: a
    #: retry that would be due later is dead-lettered (reason ``deadline``) instead.
    deadline: Duration | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _delays_make_sense(self) -> Self:
        if self.max_delay < self.initial_delay:
            raise ValueError("max_delay must not be smaller than initial_delay")
        if self.deadline is not None and self.deadline < self.initial_delay:
            raise ValueError("deadline must not be smaller than initial_delay (no retry fits)")
        return self

    def delay_ms(self, failures: int) -> int:
        """The delay after the *failures*-th failed attempt (1-based), jitter excluded."""
        delay = self.initial_delay
        if self.backoff == "exponential":
            delay *= self.multiplier ** (failures - 1)
        return max(1, round(min(delay, self.max_delay) * 1000))

    def delays_ms(self) -> list[int]:
        """The distinct delays the policy can use, one retry topic each.

        A delay longer than the deadline is never used: its retry would be due past it.
        """
        limit = self._deadline_ms
        delays = {self.delay_ms(n) for n in range(1, self.attempts)}
        return sorted(d for d in delays if limit is None or d <= limit)

    def past_deadline(self, *, first_failure_ms: int, due_ms: int) -> bool:
        """Whether a retry due at *due_ms* is later than the deadline allows (epoch ms)."""
        limit = self._deadline_ms
        return limit is not None and due_ms > first_failure_ms + limit

    @property
    def _deadline_ms(self) -> int | None:
        return None if self.deadline is None else round(self.deadline * 1000)

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether attempt number *attempt* (1-based), failed with *error*, gets another."""
        return attempt < self.attempts and not self.is_non_retryable(error)

    def is_non_retryable(self, error: BaseException) -> bool:
        if not self.non_retryable:
            return False
        names = set()
        for cls in type(error).__mro__:
            names.add(cls.__name__)
            names.add(f"{cls.__module__}.{cls.__qualname__}")
        return any(name in names for name in self.non_retryable)

    def jittered_ms(self, delay_ms: int) -> int:
        if not self.jitter:
            return delay_ms
        return delay_ms + round(delay_ms * self.jitter * random.random())


class AgentSettings(_Section):
    """Per-agent policy, ``[agents.NAME]`` in ``mesh.toml``."""

    concurrency: int = Field(default=100, ge=1, le=100_000)
    #: How long one attempt of the handler may run (``"off"`` for no limit). A hung call
    #: (an LLM request that never answers) otherwise holds its event, and with it the
    #: partition's committed offset, forever.
    timeout: Timeout = 300.0
    #: Records of one partition received past its committed offset, at most: past this
    #: the partition is paused until its oldest unfinished event finishes, so one hung
    #: event bounds memory and what a restart must redeliver.
    max_uncommitted: int = Field(default=10_000, ge=1)
    #: A batch agent's handler gets at most this many events at once...
    batch_size: int = Field(default=500, ge=1, le=100_000)
    #: ... gathered for at most this long while an earlier batch runs.
    batch_wait: Duration = Field(default=0.05, gt=0)
    group_id: str | None = None
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    #: How long the broker keeps this agent's dead letters (``retention.ms`` of its
    #: dead-letter topics, set when mesh creates them); None keeps them until deleted.
    dead_letter_retention: Duration | None = Field(default=None, gt=0)


class Settings(BaseSettings):
    """The effective configuration of a mesh process."""

    model_config = SettingsConfigDict(
        env_prefix="MESH_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    #: The project's app, ``module:attribute`` (``app = "shop.app:app"`` in ``mesh.toml``):
    #: the event types whose topics name the registry subjects ``mesh schema`` checks.
    app: str | None = None
    bootstrap_servers: str = "127.0.0.1:9092"
    #: The broker's kind: ``kafka`` (Apache Kafka, Confluent, MSK, Redpanda) never gets
    #: the embedded broker's workarounds, ``tansu`` always does, ``auto`` asks the
    #: cluster once per process (Tansu names itself in its cluster id).
    broker: Literal["auto", "kafka", "tansu"] = "auto"
    #: Extra librdkafka properties (``"security.protocol" = "SASL_SSL"``, ...).
    kafka: dict[str, str | int | float | bool] = Field(default_factory=dict)
    registry_url: str = "http://127.0.0.1:8081"
    #: ``"user:password"`` for registry basic auth.
    registry_auth: SecretStr | None = None
    #: An ``https://`` registry: the CA file that signed its certificate (default: the
    #: system's), and a client certificate and key (PEM) for a registry that asks for one.
    registry_ssl_ca_location: str | None = None
    registry_ssl_certificate_location: str | None = None
    registry_ssl_key_location: str | None = None
    #: Registry subject naming: ``topic_name`` ({topic}-value), ``record_name`` or
    #: ``topic_record_name`` (needed when several event types share a topic).
    subject_strategy: Literal["topic_name", "record_name", "topic_record_name"] = "topic_name"
    topics: TopicDefaults = Field(default_factory=TopicDefaults)
    agents: dict[str, AgentSettings] = Field(default_factory=dict)
    #: Delay topics ``mesh.delay.{namespace}.{bucket}`` and the forwarders' group
    #: ``mesh.delay.{namespace}``; an app's name when unset (see mesh.runtime.delay).
    delay_namespace: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-][A-Za-z0-9._-]*$")
    #: ``mesh run`` serves /metrics, /healthz and /readyz here; 0 turns it off.
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_host: str = "0.0.0.0"
    #: A span per handled event through the OpenTelemetry API (the ``otel`` extra).
    tracing: bool = False
    #: ``"user:password"``: ``mesh console`` asks for basic auth on every page (its
    #: ``--auth`` wins over this).
    console_auth: SecretStr | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FileSource(settings_cls)

    @field_validator("console_auth")
    @classmethod
    def _user_and_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and ":" not in value.get_secret_value():
            raise ValueError("use USER:PASSWORD")
        return value

    @field_validator("kafka")
    @classmethod
    def _librdkafka_accepts(cls, kafka: dict[str, Any]) -> dict[str, Any]:
        for key, value in kafka.items():
            if (refusal := _librdkafka_refusal(key, value)) is not None:
                raise ValueError(f'"{key}": {refusal}')
        return kafka

    def kafka_config(self, **overrides: Any) -> dict[str, Any]:
        """librdkafka configuration: bootstrap servers, the user's properties, then overrides.

        librdkafka's own log lines go through the ``mesh.kafka`` logger rather than
        straight to stderr, so they follow the process's log format (JSON lines).
        """
        return {
            "bootstrap.servers": self.bootstrap_servers,
            "logger": _KAFKA_LOG,
            **self.kafka,
            **overrides,
        }

    def registry_config(self) -> dict[str, Any]:
        """Configuration for ``confluent_kafka.schema_registry.SchemaRegistryClient``."""
        conf: dict[str, Any] = {"url": self.registry_url}
        if self.registry_auth is not None:
            conf["basic.auth.user.info"] = self.registry_auth.get_secret_value()
        for prop, value in (
            ("ssl.ca.location", self.registry_ssl_ca_location),
            ("ssl.certificate.location", self.registry_ssl_certificate_location),
            ("ssl.key.location", self.registry_ssl_key_location),
        ):
            if value is not None:
                conf[prop] = value
        return conf

    def agent(self, name: str) -> AgentSettings:
        """The policy of agent *name*, defaults where the config is silent."""
        return self.agents.get(name, AgentSettings())

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with every secret masked, safe to print or log."""
        data = self.model_dump(mode="json")
        data["kafka"] = self._redacted_kafka()
        data["registry_url"] = redact_url(self.registry_url)
        if self.registry_auth is not None:
            user = self.registry_auth.get_secret_value().split(":", 1)[0]
            data["registry_auth"] = f"{user}:{_MASK}"
        if self.console_auth is not None:
            user = self.console_auth.get_secret_value().split(":", 1)[0]
            data["console_auth"] = f"{user}:{_MASK}"
        return data

    def _redacted_kafka(self) -> dict[str, Any]:
        return {key: _MASK if _SECRET_KEY.search(key) else val for key, val in self.kafka.items()}

    def __repr_args__(self) -> Any:
        for name, value in super().__repr_args__():
            yield name, self._redacted_kafka() if name == "kafka" else value


def redact_url(url: str) -> str:
    """*url* with the password of its user-info masked (``https://user:***@host``): a
    registry URL may carry credentials, and must not reach a terminal or a log with them."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:{_MASK}@{host}"))


_file_data: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "mesh_config_file_data", default=None
)


class _FileSource(PydanticBaseSettingsSource):
    """The parsed config file, lowest-priority source after the defaults."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_file_data.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_data.get() or {})


#: Not a librdkafka property: set last, it stops client creation (see below).
_PROBE = "mesh.probe"
_NAMED = re.compile(r'property "([^"]+)"', re.IGNORECASE)


def _librdkafka_refusal(key: str, value: Any) -> str | None:
    """What librdkafka says against ``key = value`` (an unknown name, a bad value), if anything.

    librdkafka checks each property as it is set, in order, and creates the client after
    the last one: the unknown :data:`_PROBE` set last stops it before that, so the check
    opens no connection and starts no SASL login. librdkafka names an alias by the
    property it stands for (``linger.ms`` is ``queue.buffering.max.ms``), hence the note.
    """
    try:
        Producer({key: value, _PROBE: ""})
    except KafkaException as exc:
        message: str = exc.args[0].str().strip()
    except (TypeError, ValueError) as exc:  # a callback property (error_cb) given a value
        message = str(exc)
    else:  # never: librdkafka has no property named _PROBE
        return None
    if _PROBE in message:  # *key* passed
        return None
    named = _NAMED.search(message)
    if named is not None and named.group(1) != key:
        message += f" (librdkafka's name for {key})"
    return message


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings from *config_file* (default ``$MESH_CONFIG`` or ``./mesh.toml``).

    A missing default file is fine; a missing file that was asked for is an error.
    Overrides whose value is ``None`` are ignored, so CLI options can be passed through.
    """
    explicit = config_file or os.environ.get(CONFIG_FILE_ENV)
    path = Path(explicit or DEFAULT_CONFIG_FILE)
    if explicit and not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    file_data = _read_config_file(path) if path.is_file() else {}
    token = _file_data.set(file_data)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path, file_data)) from None
    except SettingsError as exc:  # a MESH_* variable that should hold JSON does not
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"MESH_{field.group(1).upper()}" if field else "a MESH_* variable"
        raise ConfigError(f"environment variable {name}: not valid JSON: {exc.__cause__}") from None
    finally:
        _file_data.reset(token)


def _describe(exc: ValidationError, path: Path, file_data: dict[str, Any]) -> str:
    """One line per problem, naming where the bad value came from."""
    lines = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        top = str(error["loc"][0]) if error["loc"] else ""
        env_name = f"MESH_{top.upper()}"
        if any(name.startswith(env_name) for name in os.environ):
            origin = f"environment variable {env_name}"
        elif top in file_data:
            origin = str(path)
        else:
            origin = "settings"
        reason = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            reason = "unknown key"
        lines.append(f"{origin}: {key}: {reason}")
    return "\n".join(lines)
