"""Pagination of list endpoints: `page` and `records` in, `{total, page, records, entries}` out.

The query parameters are read as text and checked here, not by FastAPI, so a bad value gets
the contract's own message (`...invalid values: records.`) with the allowed range.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel

from api.errors import PAGE_NOT_FOUND, bad_request, invalid_arguments, not_found

T = TypeVar("T")

DEFAULT_RECORDS = 25
MAX_RECORDS = 100


class Page(BaseModel, Generic[T]):
    """One page of a list; `records` is the page size asked for, not the entries returned."""

    total: int
    page: int
    records: int
    entries: list[T]


@dataclass(frozen=True)
class Paging:
    """The validated `page` (1-based) and `records` (page size) of a list request."""

    page: int = 1
    records: int = DEFAULT_RECORDS

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.records

    @property
    def limit(self) -> int:
        return self.records


def _whole_number(text: str | None, name: str, low: int, high: int | None, default: int) -> int:
    if text is None:
        return default
    value = text.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise bad_request(invalid_arguments([name], _range_reason(name, low, high)))
    number = int(value)
    if number < low or (high is not None and number > high):
        raise bad_request(invalid_arguments([name], _range_reason(name, low, high)))
    return number


def _range_reason(name: str, low: int, high: int | None) -> str:
    if high is None:
        return f"The {name} must be a whole number of at least {low}."
    return f"The {name} must be a whole number from {low} to {high}."


def page_params(
    page: Annotated[str | None, Query(description="1-based page number (default 1)")] = None,
    records: Annotated[
        str | None, Query(description=f"Page size, 1 to {MAX_RECORDS} (default {DEFAULT_RECORDS})")
    ] = None,
) -> Paging:
    """Read `page` and `records`; 400 naming the argument when out of range or not a number."""
    return Paging(
        page=_whole_number(page, "page", 1, None, 1),
        records=_whole_number(records, "records", 1, MAX_RECORDS, DEFAULT_RECORDS),
    )


# Declare `paging: PageParams` in a route to get the validated `Paging`.
PageParams = Annotated[Paging, Depends(page_params)]


def page_of(total: int, entries: list[T], params: Paging) -> Page[T]:
    """Wrap a page of entries; a page past the end is 404, an empty first page is not."""
    if params.page > 1 and params.offset >= total:
        raise not_found(PAGE_NOT_FOUND)
    return Page(total=total, page=params.page, records=params.records, entries=entries)
