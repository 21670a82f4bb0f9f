"""A Confluent Schema Registry-compatible service whose state lives in a Kafka topic.

``SchemaRegistryClient``, ``AvroSerializer`` and ``AvroDeserializer`` work against it
unchanged. Modules, from the wire inwards:

- :mod:`~mesh.registry.api` routes HTTP requests, :mod:`~mesh.registry.request` parses them;
- :mod:`~mesh.registry.forward` sends writes to the primary registry;
- :mod:`~mesh.registry.service` carries out the operations;
- :mod:`~mesh.registry.election` decides who writes, and shows why ids never collide;
- :mod:`~mesh.registry.writer` and :mod:`~mesh.registry.reader` talk to the ``_schemas``
  topic, whose format is :mod:`~mesh.registry.records`;
- :mod:`~mesh.registry.store` holds the state in memory;
- :mod:`~mesh.registry.schema` is pure Avro logic (compatibility: :mod:`mesh.schema.compatibility`);
- :mod:`~mesh.registry.server` wires them together and runs the process.
"""

from mesh.registry.server import RegistryConfig, run, serve

__all__ = ["RegistryConfig", "run", "serve"]
