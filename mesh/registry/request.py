"""Reading what clients send: JSON bodies, query flags, pagination and path parameters.

Clients differ in small ways (``normalize=False`` or ``false``, any content type, ``null``
for absent fields); everything malformed becomes a 4xx :class:`ApiError`, never a 500.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from mesh.registry.errors import ApiError
from mesh.registry.schema import Reference
from mesh.registry.service import SchemaRequest

__all__ = ["flag", "json_body", "page", "parse_schema_id", "schema_request"]

_MAX_INT32 = 2**31 - 1  # ids and versions are Java ints in Confluent's clients


def flag(request: web.Request, name: str) -> bool:
    """A boolean query parameter; clients send ``true``, ``True``, ``false``, ``False``."""
    return request.query.get(name, "").lower() == "true"


def page(request: web.Request, items: list[Any]) -> list[Any]:
    """Confluent's ``offset`` / ``limit`` pagination (a negative limit: everything)."""
    offset, limit = _int_query(request, "offset", 0), _int_query(request, "limit", -1)
    items = items[max(offset, 0) :]
    return items if limit < 0 else items[:limit]


def _int_query(request: web.Request, name: str, default: int) -> int:
    try:
        return int(request.query.get(name, default))
    except ValueError:
        return default


def parse_schema_id(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise ApiError.route_not_found()  # Confluent answers a non-numeric id like a bad path
    return int(text)


async def json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        raise ApiError.unprocessable("The request body is empty")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise ApiError.bad_request(f"Malformed JSON in the request body: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError.unprocessable("The request body must be a JSON object")
    return data


def schema_request(body: dict[str, Any]) -> SchemaRequest:
    text = body.get("schema")
    if text is None or text == "":
        raise ApiError.invalid_schema("Empty schema")
    if not isinstance(text, str):
        raise ApiError.unprocessable("'schema' must be a string holding the schema as JSON")
    schema_type = body.get("schemaType") or "AVRO"
    if not isinstance(schema_type, str):
        raise ApiError.unprocessable("'schemaType' must be a string")
    for unsupported in ("metadata", "ruleSet"):
        if body.get(unsupported) is not None:
            raise ApiError.invalid_schema(f"'{unsupported}' is not supported by this registry")
    return SchemaRequest(
        text=text,
        schema_type=schema_type,
        references=_references(body.get("references")),
        schema_id=_positive_int(body, "id"),
        version=_positive_int(body, "version"),
    )


def _references(raw: object) -> tuple[Reference, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ApiError.unprocessable("'references' must be a list")
    references = []
    for item in raw:
        if not (
            isinstance(item, dict)
            and isinstance(item.get("name"), str)
            and isinstance(item.get("subject"), str)
            and type(item.get("version")) is int
        ):
            raise ApiError.unprocessable(
                "each reference must be an object with a string 'name', a string 'subject' "
                "and an integer 'version'"
            )
        references.append(Reference(item["name"], item["subject"], item["version"]))
    return tuple(references)


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None or (type(value) is int and value == -1):
        return None
    if type(value) is not int or not 1 <= value <= _MAX_INT32:
        raise ApiError.unprocessable(f"'{name}' must be an integer in [1, 2^31-1]")
    return value
