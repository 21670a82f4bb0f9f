"""Topics as mesh creates them: the broker's replication factor, dead letters kept."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from mesh import Event, Mesh, Settings
from mesh.config import AgentSettings, TopicDefaults, load_settings
from mesh.errors import ConfigError
from mesh.kafka.topics import TopicSpec, ensure_topics, existing_topics
from mesh.testing import unique_name


def _retention_ms(admin: AdminClient, topic: str) -> str:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    (future,) = admin.describe_configs([resource]).values()
    return future.result()["retention.ms"].value


def test_a_topic_is_created_with_the_brokers_replication_factor_by_default(
    mesh_admin: AdminClient,
) -> None:
    spec = TopicSpec(unique_name("rf"), 2)
    assert spec.replication_factor == TopicDefaults().replication_factor == -1
    assert ensure_topics(mesh_admin, [spec]) == [spec.name]
    assert existing_topics(mesh_admin)[spec.name] == 2


@pytest.mark.parametrize("factor", [-1, 1, 3])
def test_replication_factor_takes_minus_one_or_a_count(factor: int) -> None:
    assert TopicDefaults(replication_factor=factor).replication_factor == factor


def test_replication_factor_zero_is_refused() -> None:
    with pytest.raises(ConfigError, match="replication_factor must be -1"):
        load_settings(topics={"replication_factor": 0})


def test_dead_letters_are_kept_forever_unless_the_agent_sets_a_retention(
    make_app: Callable[..., Mesh], mesh_settings: Settings, mesh_admin: AdminClient
) -> None:
    stem = unique_name("keep")

    class Job(Event, topic=f"{stem}.jobs", key="job_id", name="test.keep.Job"):
        job_id: str

    settings = mesh_settings.model_copy(
        update={"agents": {"brief": AgentSettings(dead_letter_retention="30d")}}
    )
    app = make_app(Job, settings=settings)

    @app.agent("forever", consumes=Job)
    async def forever(event: Job) -> None: ...

    @app.agent("brief", consumes=Job)
    async def brief(event: Job) -> None: ...

    app.prepare()
    kept = _retention_ms(mesh_admin, f"{Job.topic()}.{app.group_id('forever')}.dlq")
    assert kept == "-1"
    brief_ms = _retention_ms(mesh_admin, f"{Job.topic()}.{app.group_id('brief')}.dlq")
    assert brief_ms == str(30 * 86_400_000)
