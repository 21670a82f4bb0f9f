import sys

import pytest

from mesh import ConfigError
from mesh.runtime.tracing import event_tracer


def test_tracing_off_costs_nothing_and_on_without_opentelemetry_fails_clearly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert event_tracer(False) is None
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    with pytest.raises(ConfigError, match=r"pip install 'mesh-agents\[otel\]'"):
        event_tracer(True)
