"""Text the database can store, checked where requests come in.

PostgreSQL text cannot hold NUL characters, and JSON may carry lone UTF-16 surrogates
(`"\\ud800"`) that are no Unicode at all and cannot be encoded as UTF-8. Either would fail
deep inside a query as a 500; checked at the boundary they are a 400 naming the argument.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, field_validator


def storable(text: str) -> bool:
    """No NUL, and valid Unicode (encodable as UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class RequestBody(BaseModel):
    """Base of request bodies: every text field must be storable (else 400 naming it)."""

    @field_validator("*", mode="before")
    @classmethod
    def _storable_text(cls, value: Any) -> Any:
        if isinstance(value, str) and not storable(value):
            raise ValueError("text with a NUL character or invalid Unicode")
        return value
