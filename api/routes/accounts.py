"""Accounts: registration, retrieval, order history and the ticket wallet.

Who may see an account is checked in a dependency (`AccountAccess`), so it runs before
the query string is validated: a customer probing other accounts gets 403 whatever it
sends and whether or not the account exists.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from api.dependencies import Database, SettingsDep
from api.errors import (
    KEY_ERRORS,
    conflict,
    error_responses,
    location_header,
    not_found,
    restricted,
)
from api.pagination import Page, PageParams, page_of
from api.security import (
    ApiKeyHeader,
    Caller,
    CallerDep,
    authenticate,
    client_version_header,
)
from api.text import RequestBody, storable
from db import accounts as account_sql
from db import orders as order_sql
from domain import Account, Order, OrderStatus, Role, Ticket, Title, account_uri
from passwords import hash_password

router = APIRouter(tags=["Accounts"], dependencies=[Depends(client_version_header)])

ACCOUNT_NOT_FOUND = "The requested account could not be located"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
USERNAME_PATTERN = r"^[A-Za-z0-9_.-]+$"

_ACCOUNT_ERRORS = error_responses(
    *KEY_ERRORS,
    404,
    _403="Key unknown or ended, or neither the account itself nor staff",
    _404="No such account (to staff; others get 403 whether or not it exists)",
)
_LIST_ERRORS = error_responses(
    *KEY_ERRORS,
    400,
    404,
    _400="`page`, `records` or `status` is invalid",
    _403="Key unknown or ended, or neither the account itself nor staff",
    _404="No such account, or a page past the last",
)


def _calendar_date(value: object) -> object:
    """Only `YYYY-MM-DD` strings of a real day, not in the future (FastAPI validates the
    parsed JSON in Python mode, where pydantic would also take numbers and timestamps)."""
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("not a YYYY-MM-DD date")
    day = date.fromisoformat(value)
    if day > datetime.now(UTC).date():
        raise ValueError("date in the future")
    return day


Text = Annotated[str, Field(min_length=1, max_length=200, strict=True)]


class Registration(RequestBody):
    """Body of `POST /accounts`. `role` counts only when an administrator registers."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        extra="ignore",
        json_schema_extra={
            "examples": [
                {
                    "username": "ada",
                    "password": "correct horse battery",
                    "email": "ada@example.com",
                    "firstName": "Ada",
                    "lastName": "Lovelace",
                    "title": "Ms",
                }
            ]
        },
    )

    username: Annotated[
        str, Field(min_length=3, max_length=64, pattern=USERNAME_PATTERN, strict=True)
    ]
    password: Annotated[str, Field(min_length=8, max_length=1024, strict=True)]
    email: Annotated[str, Field(min_length=3, max_length=254, pattern=EMAIL_PATTERN, strict=True)]
    role: Role | None = None
    first_name: Text | None = None
    last_name: Text | None = None
    title: Title | None = None
    date_of_birth: Annotated[
        date | None, BeforeValidator(_calendar_date), Field(description="YYYY-MM-DD")
    ] = None
    phone: Annotated[str, Field(min_length=1, max_length=40, strict=True)] | None = None
    country: Text | None = None
    first_address_line: Text | None = None
    second_address_line: Text | None = None
    city: Text | None = None
    state: Text | None = None


async def optional_caller(
    db: Database, settings: SettingsDep, x_api_key: ApiKeyHeader
) -> Caller | None:
    """Registration needs no key; a key that is sent must still be valid and not a
    `payments` key (else 403). Only an administrator's key makes `role` count."""
    if not x_api_key:
        return None
    caller = await authenticate(db, settings, x_api_key)
    if caller.is_payments:
        raise restricted()
    return caller


def account_access(
    caller: CallerDep, number: Annotated[str, Path(description="Account number")]
) -> str:
    """The account itself and staff may read an account; everyone else gets 403."""
    if not (caller.owns(number) or caller.is_staff):
        raise restricted()
    if not storable(number):  # cannot name an account (nor be sent to PostgreSQL)
        raise not_found(ACCOUNT_NOT_FOUND)
    return number


AccountAccess = Annotated[str, Depends(account_access)]


async def _require_account(db: Database, number: str) -> None:
    async with db.acquire() as conn:
        if not await account_sql.account_exists(conn, number):
            raise not_found(ACCOUNT_NOT_FOUND)


@router.post(
    "/accounts",
    status_code=201,
    response_model=Account,
    responses={
        201: {"headers": location_header("The new account")},
        **error_responses(
            400,
            403,
            409,
            412,
            429,
            503,
            _403="A key was sent, but it is unknown, ended or a payments key",
            _409="Username or email already registered; the text names which",
            _429="Too many requests with the key that was sent",
        ),
    },
    # The key is optional here: without one, anybody may register as a customer.
    openapi_extra={"security": [{}, {"SessionKey": []}]},
)
async def register(
    caller: Annotated[Caller | None, Depends(optional_caller)],
    body: Registration,
    db: Database,
    response: Response,
) -> Account:
    """Register an account. Self-registration always makes a `customer`."""
    role = body.role if body.role and caller and caller.is_administrator else Role.CUSTOMER
    new = account_sql.NewAccount(
        username=body.username,
        email=body.email,
        password_hash=await hash_password(body.password),
        role=role,
        first_name=body.first_name,
        last_name=body.last_name,
        title=body.title,
        date_of_birth=body.date_of_birth,
        phone=body.phone,
        country=body.country,
        first_address_line=body.first_address_line,
        second_address_line=body.second_address_line,
        city=body.city,
        state=body.state,
    )
    try:
        async with db.acquire() as conn:
            account = await account_sql.create_account(conn, new)
    except account_sql.DuplicateAccount as duplicate:
        raise conflict(
            "The following arguments conflict with those of another user: "
            f"{', '.join(duplicate.arguments)}."
        ) from None
    response.headers["Location"] = account_uri(account.number)
    return account


@router.get("/accounts/{number}", response_model=Account, responses=_ACCOUNT_ERRORS)
async def get_account(number: AccountAccess, db: Database) -> Account:
    """One account, to itself or to staff."""
    async with db.acquire() as conn:
        account = await account_sql.get_account(conn, number)
    if account is None:
        raise not_found(ACCOUNT_NOT_FOUND)
    return account


@router.get("/accounts/{number}/orders", response_model=Page[Order], responses=_LIST_ERRORS)
async def account_orders(
    number: AccountAccess,
    paging: PageParams,
    db: Database,
    status: Annotated[OrderStatus | None, Query(description="Only orders in this status")] = None,
) -> Page[Order]:
    """The account's orders, newest first."""
    await _require_account(db, number)
    async with db.acquire() as conn:
        total, orders = await order_sql.list_orders(
            conn,
            customer_number=number,
            status=status,
            number_pattern=None,
            descending=True,
            offset=paging.offset,
            limit=paging.limit,
        )
    return page_of(total, orders, paging)


@router.get("/accounts/{number}/tickets", response_model=Page[Ticket], responses=_LIST_ERRORS)
async def account_tickets(number: AccountAccess, paging: PageParams, db: Database) -> Page[Ticket]:
    """The wallet: tickets delivered to the account, newest first."""
    await _require_account(db, number)
    async with db.acquire() as conn:
        total, tickets = await account_sql.list_tickets(
            conn, number, offset=paging.offset, limit=paging.limit
        )
    return page_of(total, tickets, paging)
