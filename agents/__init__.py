"""Example agents (run them with ``mesh run agents.hello:app``)."""
