"""Exceptions raised by mesh.

Every error mesh raises on purpose derives from :class:`MeshError`, so a caller
(and the CLI) can tell a reported condition from a bug::

    MeshError
    ├── ConfigError          a config file or MESH_* variable is invalid
    ├── InputError           a command's input is malformed or names nothing (CLI exit 2)
    ├── BrokerError          the broker cannot be found, started or reached
    ├── PublishError         the broker did not acknowledge an event (refused or timed out)
    ├── DevStackError        `mesh dev` cannot start, find or stop its processes
    ├── SchemaError          an event type has no Avro form, or its .avsc is missing or drifted
    ├── RegistryError        the schema registry is unreachable or failed (transient: retry)
    ├── RegistryServerError  `mesh registry serve` cannot start, or refuses a request
    │   └── mesh.registry.errors.ApiError   a Confluent-style HTTP error
    ├── SerializationError   an event cannot be encoded for its topic (``.reason``)
    └── DeserializationError a record value cannot be decoded into its event type (``.reason``)

The two serde errors are permanent for the data at hand (the same bytes or the same event
fail the same way again), so the runtime dead-letters instead of retrying; a
``RegistryError`` is not about the data and is worth retrying.
"""

from __future__ import annotations

from typing import Literal

__all__ = [
    "BrokerError",
    "ConfigError",
    "DecodeFailure",
    "DeserializationError",
    "DevStackError",
    "EncodeFailure",
    "InputError",
    "MeshError",
    "PublishError",
    "RegistryError",
    "RegistryServerError",
    "SchemaError",
    "SerializationError",
]

#: Why an event could not be encoded: its data does not fit its schema, or the registry
#: refused the schema (incompatible with the subject, or not registered when
#: auto-registration is off).
EncodeFailure = Literal["invalid", "schema-rejected"]

#: Why a record value could not be decoded, from the outside in: no value at all, not the
#: Confluent wire format, shorter than its header, a schema id the registry does not know,
#: a writer schema that cannot be resolved to the event type's, bytes that are not valid
#: Avro for the writer schema, decoded data the event type's validation refuses.
DecodeFailure = Literal[
    "empty", "bad-magic", "truncated", "unknown-schema", "schema-mismatch", "malformed", "invalid"
]


class MeshError(Exception):
    """Base class of every error mesh reports to its user."""


class ConfigError(MeshError):
    """The configuration (``mesh.toml`` or a ``MESH_*`` variable) is invalid."""


class InputError(MeshError):
    """What a user typed is malformed or names nothing that exists (event data, a type, a topic).

    Raised before anything is sent, so the command can be corrected and run again; the CLI
    exits with code 2, as for a usage error.
    """


class BrokerError(MeshError):
    """A Kafka broker could not be located, started or reached."""


class PublishError(MeshError):
    """The broker did not acknowledge an event: it refused it, or did not answer in time."""


class DevStackError(MeshError):
    """The embedded development stack could not be started, inspected or stopped."""


class SchemaError(MeshError):
    """An event type cannot be expressed in Avro, or its ``.avsc`` is missing or out of date."""


class RegistryError(MeshError):
    """The schema registry could not be reached or answered with a server error."""


class SerializationError(MeshError):
    """An event could not be encoded for its topic; ``reason`` says why."""

    def __init__(self, message: str, *, reason: EncodeFailure = "invalid") -> None:
        super().__init__(message)
        self.reason: EncodeFailure = reason


class DeserializationError(MeshError):
    """A record value could not be decoded into its event type; ``reason`` says why."""

    def __init__(self, message: str, *, reason: DecodeFailure = "malformed") -> None:
        super().__init__(message)
        self.reason: DecodeFailure = reason


class RegistryServerError(MeshError):
    """``mesh registry serve`` cannot start or serve: its port, its topic or its broker."""
