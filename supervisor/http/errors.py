"""The one error shape of the API: `{"error", "message", "node_id", "details"?}`."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
from sanic.response import HTTPResponse

_encoder = msgspec.json.Encoder()


class FieldProblem(NamedTuple):
    field: str
    message: str


class ApiError(Exception):
    """Raised anywhere below a route; rendered by the app's error handler."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[FieldProblem] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HTTPResponse:
    return HTTPResponse(
        _encoder.encode(body), status=status, headers=headers, content_type="application/json"
    )


def error_response(error: ApiError, node_id: str) -> HTTPResponse:
    body: dict[str, Any] = {"error": error.code, "message": error.message, "node_id": node_id}
    if error.details is not None:
        body["details"] = [{"field": d.field, "message": d.message} for d in error.details]
    return json_response(body, error.status, error.headers)


def unauthorized() -> ApiError:
    return ApiError(401, "unauthorized", "missing or invalid X-Internal-Auth header")


def validation_failed(details: list[FieldProblem]) -> ApiError:
    fields = ", ".join(sorted({d.field for d in details}))
    return ApiError(422, "validation_failed", f"invalid fields: {fields}", details)


# Status codes Sanic raises on its own (routing, protocol) and their error codes.
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    417: "expectation_failed",
    431: "headers_too_large",
    503: "not_ready",
}
