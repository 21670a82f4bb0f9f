"""mesh: a Kafka-native event mesh for AI agents.

::

    from mesh import Context, Event, Mesh

    class TaskCreated(Event, key="task_id"):
        task_id: str
        prompt: str

    app = Mesh("research")

    @app.agent("planner", consumes=TaskCreated)
    async def planner(event: TaskCreated, ctx: Context) -> PlanReady | None: ...
"""

from mesh.config import AgentSettings, RetryPolicy, Settings, load_settings
from mesh.dedupe import Dedupe
from mesh.envelope import Envelope
from mesh.errors import (
    BrokerError,
    ConfigError,
    DeserializationError,
    InputError,
    MeshError,
    PublishError,
    RegistryError,
    SchemaError,
    SerializationError,
)
from mesh.event import Event
from mesh.runtime.app import Mesh
from mesh.runtime.context import Context, EmitAfterFinishError
from mesh.runtime.middleware import Middleware

__all__ = [
    "AgentSettings",
    "BrokerError",
    "ConfigError",
    "Context",
    "Dedupe",
    "DeserializationError",
    "EmitAfterFinishError",
    "Envelope",
    "Event",
    "InputError",
    "Mesh",
    "MeshError",
    "Middleware",
    "PublishError",
    "RegistryError",
    "RetryPolicy",
    "SchemaError",
    "SerializationError",
    "Settings",
    "load_settings",
]

__version__ = "0.1.0"
