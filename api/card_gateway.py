"""Card payments: the request body, its validation, and the gateway interface.

The card number and CVV never leave this module's request handling: they are not stored,
not logged and not sent to Temporal (workflow histories are visible in the UI). What goes
on is the gateway's reference, the amount and the last four digits.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from pydantic import ConfigDict, Field, field_validator

from api.errors import bad_request, invalid_arguments
from api.text import RequestBody

TEST_CARD_APPROVED = "4242424242424242"
TEST_CARD_DECLINED = "4000000000000002"


class CardPayment(RequestBody):
    """Body of `POST /orders/{number}/payments`."""

    model_config = ConfigDict(
        hide_input_in_errors=True,
        json_schema_extra={
            "examples": [
                {
                    "number": TEST_CARD_APPROVED,
                    "cvv": "123",
                    "expiryDate": "12/30",
                    "name": "Ada Lovelace",
                    "email": "ada@example.com",
                    "phone": "+1 555 0100",
                    "address1": "1 Main Street",
                    "city": "Kingston",
                    "district": "St Andrew",
                    "country": "Jamaica",
                }
            ]
        },
    )

    number: str = Field(description="Card number (PAN), digits only", examples=[TEST_CARD_APPROVED])
    cvv: str | int = Field(description="3 or 4 digits", examples=["123"])
    expiryDate: str = Field(description="MM/YY", examples=["12/30"])
    name: str = Field(min_length=1, max_length=200, examples=["Ada Lovelace"])
    email: str = Field(min_length=3, max_length=320, examples=["ada@example.com"])
    phone: str = Field(min_length=3, max_length=40, examples=["+1 555 0100"])
    address1: str = Field(min_length=1, max_length=200, examples=["1 Main Street"])
    address2: str | None = Field(default=None, max_length=200)
    city: str = Field(min_length=1, max_length=100, examples=["Kingston"])
    district: str = Field(min_length=1, max_length=100, examples=["St Andrew"])
    country: str = Field(min_length=2, max_length=100, examples=["Jamaica"])

    @field_validator("cvv", mode="before")
    @classmethod
    def _cvv_text(cls, value: object) -> object:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def luhn_valid(number: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


_CARD_NUMBER = re.compile(r"[0-9]{12,19}")
_CVV = re.compile(r"[0-9]{3,4}")
_EXPIRY = re.compile(r"([0-9]{2})/([0-9]{2})")


def check_card(card: CardPayment, now: datetime) -> None:
    """400 naming every bad card field; the values themselves are never echoed."""
    # ASCII digits only: str.isdigit() also accepts full-width, Arabic-Indic and
    # superscript digits, which no card network issues and int() cannot always read.
    invalid: list[str] = []
    if not (_CARD_NUMBER.fullmatch(card.number) and luhn_valid(card.number)):
        invalid.append("number")
    if not (isinstance(card.cvv, str) and _CVV.fullmatch(card.cvv)):
        invalid.append("cvv")
    expiry = _EXPIRY.fullmatch(card.expiryDate)
    if expiry is None:
        invalid.append("expiryDate")
    else:
        month, year = int(expiry[1]), 2000 + int(expiry[2])
        if not 1 <= month <= 12 or (year, month) < (now.year, now.month):
            invalid.append("expiryDate")
    if "@" not in card.email:
        invalid.append("email")
    if invalid:
        raise bad_request(invalid_arguments(invalid))


@dataclass(frozen=True)
class Authorisation:
    approved: bool
    reference: str


class CardGateway(Protocol):
    """What the API needs of a card processor."""

    async def authorise(self, card: CardPayment, amount: Decimal) -> Authorisation: ...

    async def void(self, reference: str) -> None: ...


class TestCardGateway:
    """The built-in gateway: approves the test card 4242…, declines every other number.

    It keeps voided references in memory only so tests can see a void happened.
    """

    def __init__(self) -> None:
        self.voided: set[str] = set()

    async def authorise(self, card: CardPayment, amount: Decimal) -> Authorisation:
        reference = f"test_{datetime.now(UTC):%Y%m%d}_{secrets.token_hex(8)}"
        return Authorisation(approved=card.number == TEST_CARD_APPROVED, reference=reference)

    async def void(self, reference: str) -> None:
        self.voided.add(reference)
