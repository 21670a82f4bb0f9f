"""Exceptions raised by mesh.

Every error mesh raises on purpose derives from :class:`MeshError`, so a caller
(and the CLI) can tell a reported condition from a bug::

    MeshError
    ├── ConfigError          a config file or MESH_* variable is invalid
    ├── BrokerError          the broker cannot be found, started or reached
    └── DevStackError        `mesh dev` cannot start, find or stop its processes
"""

from __future__ import annotations

__all__ = ["BrokerError", "ConfigError", "DevStackError", "MeshError"]


class MeshError(Exception):
    """Base class of every error mesh reports to its user."""


class ConfigError(MeshError):
    """The configuration (``mesh.toml`` or a ``MESH_*`` variable) is invalid."""


class BrokerError(MeshError):
    """A Kafka broker could not be located, started or reached."""


class DevStackError(MeshError):
    """The embedded development stack could not be started, inspected or stopped."""
