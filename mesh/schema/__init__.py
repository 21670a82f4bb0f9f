"""The schema wing: ``schemas/`` on disk, and how its files are checked and registered.

- :mod:`~mesh.schema.files` generates ``.avsc`` files from event models and verifies them;
- :mod:`~mesh.schema.avsc` parses a set of ``.avsc`` files, dependencies first;
- :mod:`~mesh.schema.compatibility` decides compatibility (pure; the registry runs it too);
- :mod:`~mesh.schema.check` is the pull-request gate, against git history or a registry;
- :mod:`~mesh.schema.subjects` registers, lists and diffs subjects in a registry.

How a model maps to Avro is core (:mod:`mesh.avro`): every event needs it.
"""
