"""The Kafka wing: every client configuration, topic provisioning, reading by assignment.

- :mod:`~mesh.kafka.clients` configures every client mesh creates, by profile;
- :mod:`~mesh.kafka.topics` creates topics idempotently and lists them;
- :mod:`~mesh.kafka.reader` reads topics without joining a group (tail, dlq, replay, trace);
- :mod:`~mesh.kafka.errors` tells errors that retrying cannot fix from the others;
- :mod:`~mesh.kafka.compat` holds the embedded broker's workarounds, and nothing else.
"""
