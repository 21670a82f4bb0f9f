"""``mesh console``: every agent, chain and dead letter of an app in a browser.

A web application (aiohttp) that reads Kafka, the schema registry and the agents'
``/metrics`` endpoints and keeps nothing of its own. The work is done by the library
(:mod:`mesh.ops.trace`, :mod:`mesh.ops.dlq`, :class:`mesh.kafka.reader.Tail`,
:mod:`mesh.schema.subjects`); this wing only gathers (``source``, ``metrics``), renders
(``html``, ``pages``) and serves (``app``). Nothing imports it but the CLI.
"""
