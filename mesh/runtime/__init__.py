"""The agent runtime: ``Mesh`` and its agents, from a consumed record to a committed offset.

An event's path: :mod:`~mesh.runtime.app` (``Mesh``, ``@app.agent``) starts an
:mod:`~mesh.runtime.worker` per agent, which polls, decodes (:mod:`mesh.serde`), runs the
handler with a :mod:`~mesh.runtime.context`, and hands outputs to the
:mod:`~mesh.runtime.publisher`; a failure becomes a :mod:`~mesh.runtime.failure` record on
a :mod:`~mesh.runtime.retry` topic or the :mod:`~mesh.runtime.dead_letter` topic, and
delayed records wait in :mod:`~mesh.runtime.delay` topics until the
:mod:`~mesh.runtime.forwarder` sends them on. Offsets are committed only for the finished
prefix (:mod:`~mesh.runtime.offsets`).
"""
