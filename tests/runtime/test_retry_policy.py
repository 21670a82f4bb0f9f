import os
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.config import RetryPolicy, load_settings
from mesh.errors import ConfigError
from mesh.runtime.topology import format_delay, retry_topic

REPO = Path(__file__).resolve().parents[2]


def test_exponential_delays_are_capped_and_distinct() -> None:
    policy = RetryPolicy(attempts=6, initial_delay="1s", multiplier=2.0, max_delay="5s")
    assert [policy.delay_ms(n) for n in range(1, 6)] == [1000, 2000, 4000, 5000, 5000]
    assert policy.delays_ms() == [1000, 2000, 4000, 5000]


def test_fixed_backoff_uses_one_topic() -> None:
    policy = RetryPolicy(attempts=4, backoff="fixed", initial_delay="250ms")
    assert policy.delays_ms() == [250]
    assert retry_topic("orders", "shop.billing", 250) == "orders.shop.billing.retry.250ms"


def test_attempts_count_the_first_try() -> None:
    policy = RetryPolicy(attempts=3)
    assert policy.should_retry(RuntimeError(), 1)
    assert policy.should_retry(RuntimeError(), 2)
    assert not policy.should_retry(RuntimeError(), 3)
    assert RetryPolicy(attempts=1).delays_ms() == []


class BadInput(ValueError):
    pass


def test_non_retryable_matches_simple_qualified_and_base_class_names() -> None:
    assert RetryPolicy(non_retryable=("BadInput",)).is_non_retryable(BadInput())
    assert RetryPolicy(non_retryable=(f"{__name__}.BadInput",)).is_non_retryable(BadInput())
    assert RetryPolicy(non_retryable=("ValueError",)).is_non_retryable(BadInput())
    assert not RetryPolicy(non_retryable=("KeyError",)).is_non_retryable(BadInput())
    assert not RetryPolicy(non_retryable=("ValueError",)).should_retry(BadInput(), 1)


def test_jitter_only_ever_delays() -> None:
    policy = RetryPolicy(jitter=0.5)
    samples = [policy.jittered_ms(1000) for _ in range(200)]
    assert min(samples) >= 1000
    assert max(samples) <= 1500
    assert len(set(samples)) > 1


def test_deadline_counts_from_the_first_failure() -> None:
    assert RetryPolicy().deadline is None
    assert not RetryPolicy().past_deadline(first_failure_ms=0, due_ms=10**12)
    policy = RetryPolicy(attempts=10, initial_delay="300ms", backoff="fixed", deadline="1s")
    assert policy.deadline == 1.0
    assert not policy.past_deadline(first_failure_ms=5_000, due_ms=6_000)  # due at the deadline
    assert policy.past_deadline(first_failure_ms=5_000, due_ms=6_001)
    assert RetryPolicy(deadline="1h").deadline == 3600.0


def test_delays_past_the_deadline_get_no_retry_topic() -> None:
    policy = RetryPolicy(attempts=10, initial_delay="1s", max_delay="1h", deadline="10s")
    assert policy.delays_ms() == [1000, 2000, 4000, 8000]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('"soon"', "invalid duration 'soon'"),
        ('"0s"', "Input should be greater than 0"),
        ("-5", "a duration cannot be negative"),
    ],
)
def test_invalid_deadline_names_key_and_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("mesh.toml").write_text(f"[agents.writer.retry]\ndeadline = {value}\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith("mesh.toml: agents.writer.retry.deadline: ")
    assert reason in str(info.value)


def test_a_deadline_shorter_than_the_first_delay_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("mesh.toml").write_text('[agents.writer.retry]\ninitial_delay = "5s"\ndeadline = "1s"\n')
    with pytest.raises(ConfigError, match=r"agents\.writer\.retry: deadline must not be smaller"):
        load_settings()


@pytest.mark.parametrize(
    ("delay_ms", "text"), [(1000, "1s"), (300_000, "5m"), (7_200_000, "2h"), (1500, "1500ms")]
)
def test_format_delay(delay_ms: int, text: str) -> None:
    assert format_delay(delay_ms) == text


def test_invalid_policy_in_config_names_key_and_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("mesh.toml").write_text(
        '[agents.writer.retry]\ninitial_delay = "5m"\nmax_delay = "1s"\nbackoff = "linear"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "mesh.toml: agents.writer.retry.backoff: Input should be 'exponential' or 'fixed'" in (
        str(info.value)
    )
    Path("mesh.toml").write_text('[agents.writer.retry]\ninitial_delay = "5m"\nmax_delay = "1s"\n')
    with pytest.raises(ConfigError, match="max_delay must not be smaller than initial_delay"):
        load_settings()


def test_config_show_prints_each_agents_effective_policy(tmp_path: Path) -> None:
    (tmp_path / "mesh.toml").write_text(
        "[agents.answerer]\nconcurrency = 8\n"
        '[agents.answerer.retry]\nattempts = 4\ndeadline = "1h"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "config", "show", "--app", "agents.hello:app"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert '"concurrency": 8' in result.stdout
    assert '"attempts": 4' in result.stdout
    assert '"deadline": 3600.0' in result.stdout
    assert "questions.hello.answerer.retry.4s" in result.stdout
    assert "questions.hello.answerer.dlq" in result.stdout
