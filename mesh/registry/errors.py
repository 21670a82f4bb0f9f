"""Confluent-style API errors: an HTTP status, a numeric ``error_code`` and a message.

Clients written for Confluent Schema Registry (``SchemaRegistryClient`` raises
``SchemaRegistryError(status, error_code, message)``) branch on these codes, so the codes
and the wording follow Confluent's.
"""

from __future__ import annotations

import json

from mesh.errors import RegistryServerError

__all__ = ["ApiError", "NotPrimaryError"]


class ApiError(RegistryServerError):
    """A request the registry refuses, answered as ``{"error_code": N, "message": ...}``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> bytes:
        return json.dumps({"error_code": self.code, "message": self.message}).encode()

    # --- 4xx: the request is at fault -------------------------------------------------

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, 400, message)

    @classmethod
    def unauthorized(cls) -> ApiError:
        return cls(401, 401, "Unauthorized")

    @classmethod
    def route_not_found(cls) -> ApiError:
        return cls(404, 404, "HTTP 404 Not Found")

    @classmethod
    def method_not_allowed(cls) -> ApiError:
        return cls(405, 405, "HTTP 405 Method Not Allowed")

    @classmethod
    def unprocessable(cls, message: str) -> ApiError:
        return cls(422, 422, message)

    @classmethod
    def subject_not_found(cls, subject: str) -> ApiError:
        return cls(404, 40401, f"Subject '{subject}' not found.")

    @classmethod
    def version_not_found(cls, subject: str, version: object) -> ApiError:
        return cls(404, 40402, f"Version {version} not found for subject '{subject}'.")

    @classmethod
    def schema_not_found(cls, detail: str = "Schema not found") -> ApiError:
        return cls(404, 40403, detail)

    @classmethod
    def subject_soft_deleted(cls, subject: str) -> ApiError:
        return cls(
            404,
            40404,
            f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently",
        )

    @classmethod
    def subject_not_soft_deleted(cls, subject: str) -> ApiError:
        return cls(
            404,
            40405,
            f"Subject '{subject}' was not deleted first before being permanently deleted",
        )

    @classmethod
    def version_soft_deleted(cls, subject: str, version: int) -> ApiError:
        return cls(
            404,
            40406,
            f"Subject '{subject}' Version {version} was soft deleted. "
            "Set permanent=true to delete permanently",
        )

    @classmethod
    def version_not_soft_deleted(cls, subject: str, version: int) -> ApiError:
        return cls(
            404,
            40407,
            f"Subject '{subject}' Version {version} was not deleted first "
            "before being permanently deleted",
        )

    @classmethod
    def subject_config_not_found(cls, subject: str) -> ApiError:
        return cls(
            404,
            40408,
            f"Subject '{subject}' does not have subject-level compatibility configured",
        )

    @classmethod
    def incompatible(cls, message: str) -> ApiError:
        return cls(409, 409, message)

    @classmethod
    def invalid_schema(cls, message: str) -> ApiError:
        return cls(422, 42201, message)

    @classmethod
    def invalid_version(cls, version: str) -> ApiError:
        return cls(
            422,
            42202,
            f"The specified version '{version}' is not a valid version id. "
            'Allowed values are between [1, 2^31-1] and the string "latest"',
        )

    @classmethod
    def invalid_compatibility(cls, level: object) -> ApiError:
        return cls(
            422,
            42203,
            f"Invalid compatibility level {level!r}. Valid values are none, backward, forward, "
            "full, backward_transitive, forward_transitive, and full_transitive",
        )

    @classmethod
    def invalid_mode(cls, mode: object) -> ApiError:
        return cls(
            422,
            42204,
            f"Invalid mode {mode!r}. Valid values are READWRITE, READONLY and IMPORT",
        )

    @classmethod
    def not_permitted(cls, message: str) -> ApiError:
        return cls(422, 42205, message)

    @classmethod
    def reference_exists(cls, subject: str, version: int) -> ApiError:
        return cls(
            422,
            42206,
            f"One or more references exist to the schema {{subject={subject},version={version}}}",
        )

    @classmethod
    def schema_too_large(cls) -> ApiError:
        return cls(422, 42209, "Schema is too large")

    # --- 5xx: the registry could not do it now; retrying may help ---------------------

    @classmethod
    def internal(cls) -> ApiError:
        return cls(500, 50001, "Internal error in the schema registry")

    @classmethod
    def store_failed(cls, detail: str) -> ApiError:
        return cls(500, 50001, f"Error in the backend data store: {detail}")

    @classmethod
    def timed_out(cls, detail: str) -> ApiError:
        return cls(500, 50002, f"Operation timed out: {detail}")

    @classmethod
    def no_primary(cls, detail: str) -> ApiError:
        return cls(500, 50003, f"Error while forwarding the request to the primary: {detail}")


class NotPrimaryError(Exception):
    """Raised by a write on a registry that is not the primary: the API forwards the request."""
