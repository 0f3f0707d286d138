"""Accounts: registration, retrieval, order history and the ticket wallet.

Who may see an account is checked in a dependency (`AccountAccess`), so it runs before
the query string is validated: a customer probing other accounts gets 403 whatever it
sends and whether or not the account exists.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from api.dependencies import Database, SettingsDep
from api.errors import ErrorBody, conflict, not_found, restricted
from api.pagination import Page, PageParams, page_of
from api.security import Caller, CallerDep, require_caller
from db import accounts as account_sql
from db import orders as order_sql
from domain import Account, Order, OrderStatus, Role, Ticket, Title, account_uri
from passwords import hash_password

router = APIRouter(tags=["Accounts"])

ACCOUNT_NOT_FOUND = "The requested account could not be located"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
USERNAME_PATTERN = r"^[A-Za-z0-9_.-]+$"

_ERRORS = {
    400: {"model": ErrorBody, "description": "An argument is missing or invalid"},
    401: {"model": ErrorBody, "description": "X-API-Key missing"},
    403: {"model": ErrorBody, "description": "Key unknown or ended, or not allowed here"},
    404: {"model": ErrorBody, "description": "No such account, or a page past the end"},
}


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


class Registration(BaseModel):
    """Body of `POST /accounts`. `role` counts only when an administrator registers."""

    model_config = ConfigDict(alias_generator=to_camel, extra="ignore")

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
    db: Database,
    settings: SettingsDep,
    x_api_key: Annotated[
        str | None, Header(description="Optional: an administrator's key may set `role`")
    ] = None,
) -> Caller | None:
    """Registration needs no key; a key that is sent must still be valid (else 403)."""
    if not x_api_key:
        return None
    return await require_caller(db, settings, x_api_key)


def account_access(
    caller: CallerDep, number: Annotated[str, Path(description="Account number")]
) -> str:
    """The account itself and staff may read an account; everyone else gets 403."""
    if not (caller.owns(number) or caller.is_staff):
        raise restricted()
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
        **_ERRORS,
        409: {"model": ErrorBody, "description": "Username or email already registered"},
    },
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


@router.get("/accounts/{number}", response_model=Account, responses=_ERRORS)
async def get_account(number: AccountAccess, db: Database) -> Account:
    """One account, to itself or to staff."""
    async with db.acquire() as conn:
        account = await account_sql.get_account(conn, number)
    if account is None:
        raise not_found(ACCOUNT_NOT_FOUND)
    return account


@router.get("/accounts/{number}/orders", response_model=Page[Order], responses=_ERRORS)
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


@router.get("/accounts/{number}/tickets", response_model=Page[Ticket], responses=_ERRORS)
async def account_tickets(number: AccountAccess, paging: PageParams, db: Database) -> Page[Ticket]:
    """The wallet: tickets delivered to the account, newest first."""
    await _require_account(db, number)
    async with db.acquire() as conn:
        total, tickets = await account_sql.list_tickets(
            conn, number, offset=paging.offset, limit=paging.limit
        )
    return page_of(total, tickets, paging)
