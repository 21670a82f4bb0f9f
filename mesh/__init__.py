"""mesh: a Kafka-native event mesh for AI agents."""

from mesh.config import AgentSettings, Settings, load_settings
from mesh.errors import BrokerError, ConfigError, DevStackError, MeshError

__all__ = [
    "AgentSettings",
    "BrokerError",
    "ConfigError",
    "DevStackError",
    "MeshError",
    "Settings",
    "load_settings",
]

__version__ = "0.1.0"
