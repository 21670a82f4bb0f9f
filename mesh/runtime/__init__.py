"""The agent runtime: ``Mesh`` and its agents, from a consumed record to a committed offset.

An event's path: :mod:`~mesh.runtime.app` (``Mesh``, ``@app.agent``) starts a
:mod:`~mesh.runtime.worker` per agent, made of a :mod:`~mesh.runtime.poller` (the
consumer's thread) and a :mod:`~mesh.runtime.dispatcher` (key lanes, handlers, offsets,
on the event loop). The dispatcher decodes (:mod:`mesh.serde`) and runs the handler with
a :mod:`~mesh.runtime.context` through the agent's :mod:`~mesh.runtime.middleware`;
:mod:`~mesh.runtime.outcomes` hands its outputs to the :mod:`~mesh.runtime.publisher`, or
turns a failure into a :mod:`~mesh.runtime.failure` record on a
:mod:`~mesh.runtime.retry` topic or the :mod:`~mesh.runtime.dead_letter` topic (every
name in :mod:`~mesh.runtime.topology`). Delayed records wait in
:mod:`~mesh.runtime.delay` topics until the :mod:`~mesh.runtime.forwarder` sends them on.
Offsets are committed only for the finished prefix (:mod:`~mesh.runtime.offsets`).
"""
