"""Every error code by raw HTTP, and malformed requests: always 4xx with a Confluent body."""

from __future__ import annotations

import json
from urllib.parse import quote

import httpx
import pytest

from mesh.testing import unique_name

INT = json.dumps({"type": "record", "name": "E", "fields": [{"name": "a", "type": "int"}]})
STRING = json.dumps({"type": "record", "name": "E", "fields": [{"name": "a", "type": "string"}]})
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


def expect(response: httpx.Response, status: int, code: int) -> None:
    assert response.headers["content-type"].startswith(CONTENT_TYPE)
    body = response.json()
    assert (response.status_code, body["error_code"]) == (status, code), body
    assert isinstance(body["message"], str)
    assert body["message"]


def register(http: httpx.Client, subject: str, schema: str = INT, **params: str) -> int:
    response = http.post(f"/subjects/{subject}/versions", json={"schema": schema}, params=params)
    assert response.status_code == 200, response.text
    return int(response.json()["id"])


def test_not_found_codes(http: httpx.Client, subject: str) -> None:
    expect(http.get(f"/subjects/{subject}/versions"), 404, 40401)
    expect(http.get(f"/subjects/{subject}/versions/1"), 404, 40401)
    expect(http.post(f"/subjects/{subject}", json={"schema": INT}), 404, 40401)
    expect(http.delete(f"/subjects/{subject}"), 404, 40401)
    register(http, subject)
    expect(http.get(f"/subjects/{subject}/versions/2"), 404, 40402)
    expect(http.get(f"/subjects/{subject}/versions/2/schema"), 404, 40402)
    expect(
        http.post(f"/compatibility/subjects/{subject}/versions/7", json={"schema": INT}), 404, 40402
    )
    expect(http.post(f"/subjects/{subject}", json={"schema": STRING}), 404, 40403)
    expect(http.get("/schemas/ids/987654"), 404, 40403)
    expect(http.get("/schemas/ids/987654/subjects"), 404, 40403)
    expect(http.get("/schemas/ids/nope"), 404, 404)
    expect(http.get(f"/config/{subject}"), 404, 40408)
    expect(http.delete(f"/config/{subject}"), 404, 40401)
    expect(http.get("/no/such/path"), 404, 404)
    expect(http.delete("/schemas/types"), 405, 405)


def test_soft_delete_rules(http: httpx.Client, subject: str) -> None:
    register(http, subject)
    expect(http.delete(f"/subjects/{subject}/versions/1", params={"permanent": "true"}), 404, 40407)
    expect(http.delete(f"/subjects/{subject}", params={"permanent": "true"}), 404, 40405)
    assert http.delete(f"/subjects/{subject}/versions/1").json() == 1
    expect(http.delete(f"/subjects/{subject}/versions/1"), 404, 40406)
    expect(http.delete(f"/subjects/{subject}"), 404, 40404)
    assert (
        http.get(f"/subjects/{subject}/versions/1", params={"deleted": "true"}).status_code == 200
    )
    expect(http.get(f"/subjects/{subject}/versions/1"), 404, 40401)
    assert http.delete(f"/subjects/{subject}/versions/1", params={"permanent": "true"}).json() == 1
    expect(http.get(f"/subjects/{subject}/versions", params={"deleted": "true"}), 404, 40401)


def test_incompatible_invalid_and_unsupported(http: httpx.Client, subject: str) -> None:
    register(http, subject)
    expect(http.post(f"/subjects/{subject}/versions", json={"schema": STRING}), 409, 409)
    for bad in ['{"type": "nope"}', "not json", '{"type":"record","name":"R"}', "[1]"]:
        expect(http.post(f"/subjects/{subject}/versions", json={"schema": bad}), 422, 42201)
        expect(http.post(f"/subjects/{subject}", json={"schema": bad}), 422, 42201)
    for schema_type in ("JSON", "PROTOBUF", "XML"):
        body = {"schema": "{}", "schemaType": schema_type}
        expect(http.post(f"/subjects/{subject}/versions", json=body), 422, 42201)
    missing_ref = {"schema": INT, "references": [{"name": "X", "subject": "nope", "version": 1}]}
    expect(http.post(f"/subjects/{subject}/versions", json=missing_ref), 422, 42201)
    expect(http.post(f"/subjects/{subject}/versions", json={"schema": "x" * 950_000}), 422, 42209)


@pytest.mark.parametrize("version", ["0", "-2", "1.5", "latest-ish", "2147483648"])
def test_invalid_versions(http: httpx.Client, subject: str, version: str) -> None:
    register(http, subject)
    expect(http.get(f"/subjects/{subject}/versions/{version}"), 422, 42202)
    expect(http.delete(f"/subjects/{subject}/versions/{version}"), 422, 42202)
    compatibility = f"/compatibility/subjects/{subject}/versions/{version}"
    expect(http.post(compatibility, json={"schema": INT}), 422, 42202)


def test_invalid_config_and_mode(http: httpx.Client, subject: str) -> None:
    for level in ("SIDEWAYS", 5, None, ""):
        expect(http.put(f"/config/{subject}", json={"compatibility": level}), 422, 42203)
        expect(http.put("/config", json={"compatibility": level}), 422, 42203)
    for mode in ("READMOSTLY", 1, None):
        expect(http.put("/mode", json={"mode": mode}), 422, 42204)
    explicit_id = {"schema": INT, "id": 4242}
    expect(http.post(f"/subjects/{subject}/versions", json=explicit_id), 422, 42205)


@pytest.fixture(scope="module")
def existing_subject(mesh_registry_url: str) -> str:
    """One subject for all malformed-body cases, so that only the body is at fault."""
    subject = unique_name("malformed")
    with httpx.Client(base_url=mesh_registry_url, timeout=30) as http:
        register(http, subject)
    return subject


BODIES: list[bytes] = [
    b"",
    b"   ",
    b"not json",
    b"{",
    b'{"schema": "x"',
    b"\xff\xfe\x00garbage",
    b"[]",
    b"42",
    b'"a string"',
    b"null",
    b"[" * 100_000,
    json.dumps({"schema": 42}).encode(),
    json.dumps({"schema": {"type": "int"}}).encode(),
    json.dumps({"schema": ["int"]}).encode(),
    json.dumps({"schema": True}).encode(),
    json.dumps({"schema": ""}).encode(),
    json.dumps({"schema": None}).encode(),
    json.dumps({}).encode(),
    json.dumps({"schema": INT, "schemaType": 7}).encode(),
    json.dumps({"schema": INT, "references": "x"}).encode(),
    json.dumps({"schema": INT, "references": [1]}).encode(),
    json.dumps({"schema": INT, "references": [{"name": 1, "subject": "s", "version": 1}]}).encode(),
    json.dumps(
        {"schema": INT, "references": [{"name": "n", "subject": "s", "version": "1"}]}
    ).encode(),
    json.dumps({"schema": INT, "id": "7"}).encode(),
    json.dumps({"schema": INT, "version": -5}).encode(),
    json.dumps({"schema": INT, "metadata": {"properties": {}}}).encode(),
    json.dumps({"schema": INT, "ruleSet": {"domainRules": []}}).encode(),
    json.dumps({"schema": json.dumps({"type": "record", "name": "R", "fields": 3})}).encode(),
    json.dumps({"schema": "[" * 3000 + "]" * 3000}).encode(),
    json.dumps({"compatibility": ["FULL"]}).encode(),
    json.dumps({"mode": {"x": 1}}).encode(),
]


@pytest.mark.parametrize("body", BODIES, ids=[repr(b[:30]) for b in BODIES])
@pytest.mark.parametrize(
    ("method", "target"),
    [
        ("POST", "/subjects/{s}/versions"),
        ("POST", "/subjects/{s}"),
        ("POST", "/compatibility/subjects/{s}/versions/latest"),
        ("POST", "/compatibility/subjects/{s}/versions"),
        ("PUT", "/config/{s}"),
        ("PUT", "/config"),
        ("PUT", "/mode"),
    ],
)
def test_malformed_bodies_are_4xx_with_a_confluent_body(
    http: httpx.Client, existing_subject: str, method: str, target: str, body: bytes
) -> None:
    response = http.request(
        method,
        target.format(s=existing_subject),
        content=body,
        headers={"Content-Type": "application/vnd.schemaregistry.v1+json"},
    )
    assert 400 <= response.status_code < 500, response.text
    assert set(response.json()) == {"error_code", "message"}
    assert response.json()["error_code"] in (400, 422, 42201, 42203, 42204)


def test_oversized_bodies_are_413(http: httpx.Client, subject: str) -> None:
    huge = json.dumps({"schema": "x" * (5 * 1024 * 1024)})
    expect(http.post(f"/subjects/{subject}/versions", content=huge), 413, 413)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/vnd.schemaregistry.v1+json",
        "application/vnd.schemaregistry+json",
        "application/json",
        "application/octet-stream",
    ],
)
def test_content_types_and_odd_subjects(http: httpx.Client, content_type: str) -> None:
    subject = unique_name("odd") + "/with slash %é?#"
    encoded = quote(subject, safe="")
    response = http.post(
        f"/subjects/{encoded}/versions",
        params={"normalize": "False", "unknown": "1"},
        content=json.dumps({"schema": INT}),
        headers={"Content-Type": content_type},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(CONTENT_TYPE)
    assert subject in http.get("/subjects", params={"deleted": "False"}).json()
    assert http.get(f"/subjects/{encoded}/versions/latest").json()["subject"] == subject
    assert http.get(f"/subjects/{encoded}/versions/-1/schema").json() == json.loads(INT)


def test_root_and_types(http: httpx.Client) -> None:
    assert http.get("/").json() == {}
    assert http.get("/schemas/types").json() == ["AVRO"]
    assert http.get("/mode").json() == {"mode": "READWRITE"}


def test_a_compatibility_check_against_a_missing_numbered_version_is_40402(
    http: httpx.Client, subject: str
) -> None:
    check = f"/compatibility/subjects/{subject}/versions/1"
    expect(http.post(check, json={"schema": INT}), 404, 40402)  # no such subject: Confluent too
    register(http, subject)
    assert http.delete(f"/subjects/{subject}/versions/1").json() == 1
    expect(http.post(check, json={"schema": INT}), 404, 40402)  # soft-deleted: not checked
    latest = http.post(f"/compatibility/subjects/{subject}/versions/latest", json={"schema": INT})
    assert latest.json() == {"is_compatible": True}  # nothing live to be incompatible with
