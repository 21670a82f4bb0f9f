"""The operations wing: what an operator does to a running mesh, one module per task.

- :mod:`~mesh.ops.publish` sends one event by hand;
- :mod:`~mesh.ops.dlq` lists, inspects and redrives dead letters;
- :mod:`~mesh.ops.replay` re-reads history into a sink from :mod:`~mesh.ops.sinks`;
- :mod:`~mesh.ops.reset` moves a consumer group's committed offsets;
- :mod:`~mesh.ops.trace` rebuilds one chain from its correlation id.
"""
