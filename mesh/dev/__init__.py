"""The development wing: the embedded stack, and what runs on it.

- :mod:`~mesh.dev.stack` starts the embedded broker (Tansu) and a registry as processes;
- :mod:`~mesh.dev.smoke` checks a stack end to end;
- :mod:`~mesh.dev.loader` imports an app from ``module:attribute``;
- :mod:`~mesh.dev.demo` runs the research pipeline under faults.
"""
