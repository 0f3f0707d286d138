"""Errors in the contract's shape: `{"message": TEXT, "error": TEXT}`, same text twice.

The docs read `message` and the vendor's SDK reads `error`, so both are always present.
Validation failures are 400 (never FastAPI's 422) and never echo request values back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

UPGRADE = "Please upgrade your client to complete this request"
UNAUTHENTICATED = "Your request could not be authenticated."
RESTRICTED = "You are restricted from accessing this resource."
NOT_FOUND = "There is presently no resource with the given URI."
PAGE_NOT_FOUND = "The specified page does not exist for the given records per page"
UNAVAILABLE = "The service is temporarily unavailable. Please retry shortly."
UNEXPECTED = "The request could not be completed because of an unexpected error."
RETRY_AFTER_SECONDS = "5"


class ErrorBody(BaseModel):
    """Every error response: the same text twice (`message` for the docs, `error` for the
    vendor's SDK)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "message": "The following arguments have invalid values: items.",
                    "error": "The following arguments have invalid values: items.",
                }
            ]
        }
    )

    message: str
    error: str


_RETRY_AFTER_HEADER = {
    "Retry-After": {
        "description": "Whole seconds to wait before trying again",
        "schema": {"type": "integer", "minimum": 1},
    }
}
_DEFAULT_DESCRIPTIONS = {
    400: "An argument is missing or invalid; the text names it",
    401: "X-API-Key missing or empty",
    403: "Key unknown or ended, or not allowed here",
    404: "There is no such resource",
    409: "The resource is in the wrong state for this action",
    412: "X-Client-Version missing, unparsable or below 3.0.0",
    422: "This Idempotency-Key was already used with a different request",
    429: "Too many requests; wait for Retry-After seconds",
    503: "PostgreSQL or Temporal cannot be reached; retry after Retry-After seconds",
}


def error_responses(*statuses: int, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for error statuses, all with `ErrorBody`.

    `descriptions` override the default texts by status (`_404="No such account"`).
    429 and 503 document their `Retry-After` header.
    """
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {
            "model": ErrorBody,
            "description": descriptions.get(f"_{status}", _DEFAULT_DESCRIPTIONS[status]),
        }
        if status in (429, 503):
            entry["headers"] = _RETRY_AFTER_HEADER
        responses[status] = entry
    return responses


# The errors any authenticated endpoint can answer besides its own.
KEY_ERRORS = (401, 403, 412, 429, 503)


def location_header(what: str) -> dict[str, Any]:
    """OpenAPI `headers` of a 201: where the new resource is."""
    return {
        "Location": {
            "description": f"{what}: its relative URI (the body's `self`)",
            "schema": {"type": "string"},
        }
    }


def missing_arguments(names: Iterable[str]) -> str:
    return f"The following arguments are required, but have not been supplied: {', '.join(names)}."


def invalid_arguments(names: Iterable[str], reason: str = "") -> str:
    text = f"The following arguments have invalid values: {', '.join(names)}."
    return f"{text} {reason}" if reason else text


class ApiError(Exception):
    """Raised anywhere in a request to answer with the contract's error body."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def unauthenticated() -> ApiError:
    return ApiError(401, UNAUTHENTICATED)


def restricted() -> ApiError:
    return ApiError(403, RESTRICTED)


def not_found(message: str = NOT_FOUND) -> ApiError:
    return ApiError(404, message)


def conflict(message: str) -> ApiError:
    return ApiError(409, message)


def unavailable(message: str = UNAVAILABLE) -> ApiError:
    return ApiError(503, message, {"Retry-After": RETRY_AFTER_SECONDS})


def error_response(
    status: int, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status, content={"message": message, "error": message}, headers=headers
    )


def _argument_name(error: Mapping[str, Any]) -> str:
    """The top-level argument a validation error is about (`items`, `customer`, `page`).

    A body that is not JSON at all is about `body` (its `loc` holds the character position
    where parsing failed, which is no argument's name), as is a list index at the top.
    """
    if error.get("type") == "json_invalid":
        return "body"
    where = ("body", "query", "path", "header")
    parts = [part for part in error.get("loc", ()) if part not in where]
    if not parts or not isinstance(parts[0], str):
        return "body"
    return parts[0]


def validation_message(errors: Iterable[Mapping[str, Any]]) -> str:
    missing: list[str] = []
    invalid: list[str] = []
    unreadable = False
    for error in errors:
        name = _argument_name(error)
        unreadable = unreadable or error.get("type") == "json_invalid"
        target = missing if error.get("type") == "missing" else invalid
        if name not in target:
            target.append(name)
    if missing:
        return missing_arguments(missing)
    if unreadable:
        return invalid_arguments(["body"], "The body must be a JSON object.")
    return invalid_arguments(invalid or ["body"])


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error in the contract's shape, and document them so in the OpenAPI."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, validation_message(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            return error_response(404, NOT_FOUND)
        if exc.status_code == 405:
            return error_response(405, "This method is not allowed on the given URI.", exc.headers)
        if exc.status_code == 400:  # FastAPI could not read the body at all
            return error_response(400, invalid_arguments(["body"], "The body could not be read."))
        return error_response(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # A bug, not the client's fault: the contract's body, never the details (uvicorn
        # logs the traceback, as Starlette re-raises the exception after this answer).
        return error_response(500, UNEXPECTED)

    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _correct_openapi(generate())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _correct_openapi(schema: dict[str, Any]) -> None:
    """Correct FastAPI's OpenAPI document (in place) to what this service really answers.

    - FastAPI adds a 422 `HTTPValidationError` to every operation with parameters; this
      service answers validation failures with 400 and `ErrorBody`, so those go (a 422 an
      operation declares itself, for an Idempotency-Key reused with another body, stays).
    - 412 is documented only where `X-Client-Version` is required: the probes and the
      documentation need no headers at all.
    - Security requirements are listed once each.
    """
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            fastapi_422 = responses.get("422", {})
            if "HTTPValidationError" in str(fastapi_422.get("content", {})):
                del responses["422"]
            # An optional key (`[{}, {"SessionKey": []}]` in openapi_extra) is appended
            # to the scheme FastAPI lists already: keep each requirement once.
            if "security" in operation:
                unique: list[Any] = []
                for requirement in operation["security"]:
                    if requirement not in unique:
                        unique.append(requirement)
                operation["security"] = unique
            parameters = operation.get("parameters", [])
            if "412" in responses and not any(
                p.get("in") == "header" and p.get("name", "").lower() == "x-client-version"
                for p in parameters
            ):
                del responses["412"]
    components = schema.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
