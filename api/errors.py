"""Errors in the contract's shape: `{"message": TEXT, "error": TEXT}`, same text twice.

The docs read `message` and the vendor's SDK reads `error`, so both are always present.
Validation failures are 400 (never FastAPI's 422) and never echo request values back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

UPGRADE = "Please upgrade your client to complete this request"
UNAUTHENTICATED = "Your request could not be authenticated."
RESTRICTED = "You are restricted from accessing this resource."
NOT_FOUND = "There is presently no resource with the given URI."
PAGE_NOT_FOUND = "The specified page does not exist for the given records per page"
UNAVAILABLE = "The service is temporarily unavailable. Please retry shortly."
RETRY_AFTER_SECONDS = "5"


class ErrorBody(BaseModel):
    """Every error response."""

    message: str
    error: str


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


def _argument_name(loc: tuple[int | str, ...]) -> str:
    """The top-level argument a validation error is about (`items`, `customer`, `page`)."""
    parts = [str(part) for part in loc if part not in ("body", "query", "path", "header")]
    return parts[0] if parts else "body"


def validation_message(errors: Iterable[dict]) -> str:
    missing: list[str] = []
    invalid: list[str] = []
    for error in errors:
        name = _argument_name(tuple(error.get("loc", ())))
        target = missing if error.get("type") == "missing" else invalid
        if name not in target:
            target.append(name)
    if missing:
        return missing_arguments(missing)
    return invalid_arguments(invalid or ["body"])


def install_error_handlers(app: FastAPI) -> None:
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
        return error_response(exc.status_code, str(exc.detail), exc.headers)
