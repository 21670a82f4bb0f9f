import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

from mesh.kafka.reader import TailRecord


def test_the_fast_json_line_equals_the_json_form() -> None:
    value = {
        "when": datetime(2026, 11, 26, 8, 0, tzinfo=UTC),
        "day": date(2026, 11, 26),
        "id": uuid.UUID("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"),
        "amount": Decimal("1.50"),
        "blob": b"\x00\xff",
        "nested": {"times": [datetime(2020, 1, 1, tzinfo=UTC)], "pair": (1, 2)},
        "n": 3,
        "text": "hi",
        "none": None,
    }
    record = TailRecord("t", 0, 7, 5, b"\xff", (("h", b"v"), ("h", None)), b"raw", value)
    line = json.loads(record.to_json_line())
    assert line == json.loads(json.dumps(record.to_json()))
    assert line["value"]["when"] == "2026-11-26T08:00:00+00:00"
    assert line["value"]["blob"] == "AP8="
    assert line["key"] == "/w=="  # not UTF-8: base64
