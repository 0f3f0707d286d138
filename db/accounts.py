"""SQL of accounts: registration, lookup, and the ticket wallet.

Usernames and emails are unique without regard to case (unique indexes on `lower(...)`),
so `Alice` cannot register next to `alice`. Account numbers are random, not sequential, so
they reveal nothing about how many accounts exist.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date

import asyncpg

from domain import Account, Role, Ticket, TicketOwner, TicketSection

_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_NUMBER_ATTEMPTS = 8

ACCOUNT_COLUMNS = """
    a.number, a.username, a.email, a.role, a.verified, a.activated, a.first_name,
    a.last_name, a.title, a.date_of_birth, a.phone, a.country, a.first_address_line,
    a.second_address_line, a.city, a.state
"""

# Which unique index stands for which argument of POST /accounts.
_UNIQUE_ARGUMENT = {"accounts_username_key": "username", "accounts_email_key": "email"}


class DuplicateAccount(Exception):
    """The username and/or email already belong to another account (any case)."""

    def __init__(self, arguments: list[str]) -> None:
        super().__init__(", ".join(arguments))
        self.arguments = arguments


@dataclass(frozen=True)
class NewAccount:
    """A validated registration, with the password already hashed."""

    username: str
    email: str
    password_hash: str
    role: Role = Role.CUSTOMER
    verified: bool = False
    activated: bool = True
    first_name: str | None = None
    last_name: str | None = None
    title: str | None = None
    date_of_birth: date | None = None
    phone: str | None = None
    country: str | None = None
    first_address_line: str | None = None
    second_address_line: str | None = None
    city: str | None = None
    state: str | None = None


def new_account_number() -> str:
    """`MO-6A39EE8D` style: two and eight random characters of [0-9A-Z]."""
    code = "".join(secrets.choice(_ALPHABET) for _ in range(10))
    return f"{code[:2]}-{code[2:]}"


def account_from_row(row: asyncpg.Record) -> Account:
    """Build the representation from a row selected with ACCOUNT_COLUMNS."""
    return Account(
        number=row["number"],
        username=row["username"],
        email=row["email"],
        role=Role(row["role"]),
        verified=row["verified"],
        activated=row["activated"],
        first_name=row["first_name"],
        last_name=row["last_name"],
        title=row["title"],
        date_of_birth=row["date_of_birth"],
        phone=row["phone"],
        country=row["country"],
        first_address_line=row["first_address_line"],
        second_address_line=row["second_address_line"],
        city=row["city"],
        state=row["state"],
    )


async def get_account(conn: asyncpg.Connection, number: str) -> Account | None:
    row = await conn.fetchrow(
        f"SELECT {ACCOUNT_COLUMNS} FROM accounts a WHERE a.number = $1", number
    )
    return account_from_row(row) if row is not None else None


async def account_exists(conn: asyncpg.Connection, number: str) -> bool:
    return bool(
        await conn.fetchval("SELECT EXISTS (SELECT 1 FROM accounts WHERE number = $1)", number)
    )


async def _taken(conn: asyncpg.Connection, username: str, email: str) -> list[str]:
    row = await conn.fetchrow(
        "SELECT coalesce(bool_or(lower(username) = lower($1)), false) AS username,"
        " coalesce(bool_or(lower(email) = lower($2)), false) AS email"
        " FROM accounts WHERE lower(username) = lower($1) OR lower(email) = lower($2)",
        username,
        email,
    )
    return [name for name in ("username", "email") if row[name]]


async def create_account(conn: asyncpg.Connection, new: NewAccount) -> Account:
    """Insert the account under a fresh random number.

    Raises DuplicateAccount naming every taken argument. The check before the insert names
    both when both are taken; the unique indexes still decide when two registrations race.
    """
    taken = await _taken(conn, new.username, new.email)
    if taken:
        raise DuplicateAccount(taken)
    for _ in range(_NUMBER_ATTEMPTS):
        try:
            # A savepoint when the caller runs a transaction, so a retry can follow.
            async with conn.transaction():
                row = await conn.fetchrow(
                    f"""
                    INSERT INTO accounts AS a (number, username, email, password_hash, role,
                        verified, activated, first_name, last_name, title, date_of_birth, phone,
                        country, first_address_line, second_address_line, city, state)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                        $16, $17)
                    RETURNING {ACCOUNT_COLUMNS}
                    """,
                    new_account_number(),
                    new.username,
                    new.email,
                    new.password_hash,
                    new.role.value,
                    new.verified,
                    new.activated,
                    new.first_name,
                    new.last_name,
                    new.title,
                    new.date_of_birth,
                    new.phone,
                    new.country,
                    new.first_address_line,
                    new.second_address_line,
                    new.city,
                    new.state,
                )
        except asyncpg.UniqueViolationError as error:
            argument = _UNIQUE_ARGUMENT.get(error.constraint_name or "")
            if argument is not None:
                raise DuplicateAccount([argument]) from None
            continue  # the random number is taken: draw another
        assert row is not None
        return account_from_row(row)
    raise RuntimeError("could not draw an unused account number")


_TICKET_SELECT = """
    SELECT t.serial, t.status, t.order_number, t.issued_at, t.redeemed_at,
           s.id AS section_id, s.event_id, s.name, s.description,
           a.number, a.username, a.email, a.first_name, a.last_name
    FROM tickets t
    JOIN sections s ON s.id = t.section_id
    JOIN accounts a ON a.id = t.owner_id
    WHERE t.owner_id = (SELECT id FROM accounts WHERE number = $1)
"""


def _ticket_from_row(row: asyncpg.Record) -> Ticket:
    return Ticket(
        serial=row["serial"],
        status=row["status"],
        section=TicketSection(
            event_id=row["event_id"],
            section_id=row["section_id"],
            name=row["name"],
            description=row["description"],
        ),
        owner=TicketOwner(
            number=row["number"],
            username=row["username"],
            email=row["email"],
            first_name=row["first_name"],
            last_name=row["last_name"],
        ),
        issued=row["issued_at"],
        order_number=row["order_number"],
        redeemed_at=row["redeemed_at"],
    )


async def list_tickets(
    conn: asyncpg.Connection, owner_number: str, *, offset: int, limit: int
) -> tuple[int, list[Ticket]]:
    """One page of an account's wallet, newest first, and how many tickets it holds.

    Count and page come from one snapshot, so the total always agrees with the entries.
    """
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        total = await conn.fetchval(
            "SELECT count(*) FROM tickets"
            " WHERE owner_id = (SELECT id FROM accounts WHERE number = $1)",
            owner_number,
        )
        rows = await conn.fetch(
            _TICKET_SELECT + " ORDER BY t.issued_at DESC, t.order_number, t.section_id, t.unit"
            " LIMIT $2 OFFSET $3",
            owner_number,
            limit,
            offset,
        )
    return total, [_ticket_from_row(row) for row in rows]
