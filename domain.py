"""Domain types shared by the API, the workflow and the activities.

Each type is defined once here. The API uses them as its response schema (camelCase on the
wire, `self` URIs), the workflow receives and returns them through the pydantic data
converter, and the activities build them from database rows. Nothing in this module does
I/O, so the workflow sandbox can import it.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    computed_field,
)
from pydantic.alias_generators import to_camel

# --- Money -------------------------------------------------------------------------------
# Exact decimals everywhere. On the wire money is a JSON number: float() of a Decimal with
# at most two places and fewer than 16 digits prints back exactly (shortest repr), and
# pydantic parses a JSON number into Decimal through its text, so nothing is ever rounded.

CENT = Decimal("0.01")


def _two_places(value: Decimal) -> Decimal:
    return value.quantize(CENT)


Money = Annotated[
    Decimal,
    Field(max_digits=14, decimal_places=2, ge=0),
    AfterValidator(_two_places),
    PlainSerializer(float, return_type=float, when_used="json"),
]


def _iso_seconds(value: datetime) -> str:
    """`2026-12-03T12:00:00+00:00`: the shape the vendor's SDK matches (no `Z`, no micros)."""
    return value.astimezone(UTC).isoformat(timespec="seconds")


# A point in time on the wire: ISO-8601 with an explicit `+00:00` offset, whole seconds.
Timestamp = Annotated[
    AwareDatetime, PlainSerializer(_iso_seconds, return_type=str, when_used="json")
]

# An amount as someone sent it (a settlement may carry a wrong one, which is recorded as is).
Amount = Annotated[Decimal, PlainSerializer(float, return_type=float, when_used="json")]


FeeTiers = tuple[tuple[Decimal | None, Decimal], ...]


def fee_per_ticket(unit_price: Decimal, tiers: FeeTiers) -> Decimal:
    """Convenience fee for one ticket: the first tier whose bound covers the unit price.

    A free ticket carries no fee, so an order of free tickets totals exactly 0.00 and is
    fulfilled at once.
    """
    if unit_price == 0:
        return Decimal("0.00")
    for upper_bound, fee in tiers:
        if upper_bound is None or unit_price <= upper_bound:
            return fee
    raise ValueError("fee schedule has no open-ended last tier")


# --- Statuses and roles ------------------------------------------------------------------


class OrderStatus(StrEnum):
    """The order statuses of TickeTing v3, spelled exactly as the API documents them."""

    PLACED = "Placed"
    FULFILLED = "Fulfilled"
    CANCELLED = "Cancelled"
    TIMED_OUT = "Timed Out"
    VOIDED = "Voided"
    RETURNED = "Returned"


class Role(StrEnum):
    CUSTOMER = "customer"
    HOST = "host"
    SUPPORT = "support"
    ADMINISTRATOR = "administrator"


STAFF_ROLES = frozenset({Role.SUPPORT, Role.ADMINISTRATOR})


class KeyLevel(StrEnum):
    """Access levels of integration keys (keys that belong to no account)."""

    ADMINISTRATOR = "administrator"
    PAYMENTS = "payments"


class PaymentOutcome(StrEnum):
    """What became of one payment or settlement attempt, as listed on the order."""

    AUTHORISED = "Authorised"  # card authorised and the order fulfilled with it
    DECLINED = "Declined"  # card declined by the gateway; the order stays Placed
    SETTLED = "Settled"  # a payment service's settlement fulfilled the order
    WRONG_AMOUNT = "Refused: wrong amount"
    DUPLICATE = "Refused: duplicate"
    REFUND_DUE = "Refund due"  # money arrived after the order ended; staff must refund it
    VOIDED = "Voided"  # card authorised, but the order had ended: authorisation voided


class PaymentSource(StrEnum):
    CARD = "card"  # POST /orders/{n}/payments through the card gateway
    SIGNAL = "signal"  # the `settle` signal sent straight to Temporal
    HTTP = "http"  # POST /orders/{n}/settlements by a payments key


# --- Identifiers and URIs ----------------------------------------------------------------

ACCOUNT_NUMBER = re.compile(r"[A-Z0-9]{2}-[0-9A-Z]{8}")
SECTION_URI = re.compile(r"/events/([1-9][0-9]{0,17})/sections/([1-9][0-9]{0,17})")


def account_uri(number: str) -> str:
    return f"/accounts/{number}"


def event_uri(event_id: int) -> str:
    return f"/events/{event_id}"


def section_uri(event_id: int, section_id: int) -> str:
    return f"/events/{event_id}/sections/{section_id}"


def order_uri(number: str) -> str:
    return f"/orders/{number}"


def order_workflow_id(number: str) -> str:
    """Workflow ID of an order: what payment services signal and operators search for."""
    return f"order-{number}"


# --- Representations ---------------------------------------------------------------------


class Representation(BaseModel):
    """Base for types that are also API bodies: camelCase on the wire, names in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class AccountSummary(Representation):
    """The account block embedded in orders and tickets."""

    number: str
    username: str
    email: str
    role: Role
    verified: bool
    activated: bool
    first_name: str | None = None
    last_name: str | None = None
    title: str | None = None

    @computed_field(alias="self")  # type: ignore[prop-decorator]
    @property
    def self_uri(self) -> str:
        return account_uri(self.number)


class OrderItem(Representation):
    """One section of an order. `price` is the unit price fixed when the order was placed."""

    number: str
    section: str = Field(description="URI of the event section")
    name: str
    description: str
    price: Money
    fee: Money = Field(description="Convenience fee per ticket")
    quantity: int


class Order(Representation):
    """An order as the API shows it and as the workflow carries it."""

    number: str
    status: OrderStatus
    placed: Timestamp
    expires: Timestamp | None = Field(
        default=None, description="When the hold ends; null once the order is not Placed"
    )
    subtotal: Money
    fees: Money
    total: Money
    items: list[OrderItem]
    customer: AccountSummary

    @computed_field(alias="self")  # type: ignore[prop-decorator]
    @property
    def self_uri(self) -> str:
        return order_uri(self.number)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def payments(self) -> str:
        return f"{order_uri(self.number)}/payments"


# --- Workflow and activity messages ------------------------------------------------------


class OrderLine(BaseModel):
    """One requested section of a new order, already parsed from its URI."""

    event_id: int
    section_id: int
    quantity: int


class PlaceOrder(BaseModel):
    """Input of OrderWorkflow: everything needed to place the order, fixed at request time.

    The limits travel with the order so that a configuration change never alters an order
    that is already running (and never makes a replay non-deterministic).
    """

    number: str
    customer_number: str
    lines: list[OrderLine]
    reservation_seconds: int
    settlement_grace_seconds: int
    max_tickets_per_section: int


class NewOrder(BaseModel):
    """What the placement activity needs: the request plus the workflow's clock."""

    request: PlaceOrder
    placed: Timestamp
    hold_expires: Timestamp


# Any amount a payment may carry and we can record: at most 14 digits before the point and
# 10 after (1e-20000 is valid JSON but no PostgreSQL numeric).
PaidAmount = Annotated[Decimal, Field(max_digits=24, decimal_places=10, allow_inf_nan=False)]


class Settlement(BaseModel):
    """A payment applied to an order: the `settle` signal's argument.

    Payment services send `{"reference": str, "amount": number or decimal string}`. A wrong
    amount (too many decimals, not the total) is recorded as refused; one PostgreSQL cannot
    even store is not a payment, and the SDK drops such a signal with a warning in the
    worker log rather than let it block the order's inbox.
    """

    reference: str = Field(min_length=1, max_length=200)
    amount: PaidAmount
    source: PaymentSource = PaymentSource.SIGNAL
    card_last4: str | None = Field(default=None, pattern=r"^[0-9]{4}$")
    # Set by the API for a card payment: past this moment it has stopped waiting and voided
    # the authorisation, so the payment must not fulfil the order any more.
    answer_by: AwareDatetime | None = None


class PaymentRecord(Representation):
    """One row of GET /orders/{n}/payments."""

    reference: str | None
    date: Timestamp
    amount: Amount
    source: PaymentSource
    outcome: PaymentOutcome
    card_last4: str | None = None
    detail: str | None = None


class Closure(BaseModel):
    """How an order left `Placed` (what the release activity is asked to record)."""

    number: str
    status: Literal[OrderStatus.CANCELLED, OrderStatus.TIMED_OUT]


class SettlementAttempt(BaseModel):
    """A settlement to apply or record, with the id that makes its write idempotent."""

    number: str
    attempt_id: str
    settlement: Settlement
    outcome: PaymentOutcome | None = None  # None: apply it; otherwise record it as this
    detail: str | None = None


class SettlementResult(BaseModel):
    """What became of a settlement, and the order as it stands afterwards."""

    order: Order
    outcome: PaymentOutcome


# --- Accounts, events and tickets ---


SESSION_URI = "/sessions/active"


def integration_key_uri(key_id: int) -> str:
    return f"/integration-keys/{key_id}"


class Title(StrEnum):
    MR = "Mr"
    MRS = "Mrs"
    MS = "Ms"
    MX = "Mx"


class Account(AccountSummary):
    """An account as `GET /accounts/{number}` shows it. Never carries the password hash."""

    date_of_birth: date | None = None
    phone: str | None = None
    country: str | None = None
    first_address_line: str | None = None
    second_address_line: str | None = None
    city: str | None = None
    state: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def preferences(self) -> str:
        return f"{account_uri(self.number)}/preferences"


class Session(Representation):
    """A session and its key. `self` is `/sessions/active`: the one URI that serves it."""

    id: int
    open: bool
    # ISO-8601 with offset like every date-time (the contract), not the SDK's
    # `YYYY-MM-DD HH:MM:SS` without a zone.
    started: Timestamp
    key: str
    account: Account

    @computed_field(alias="self")  # type: ignore[prop-decorator]
    @property
    def self_uri(self) -> str:
        return SESSION_URI


class IntegrationKey(Representation):
    """A new integration key; `key` is shown in this one answer and stored only hashed."""

    id: int
    name: str
    level: KeyLevel
    key: str
    created: Timestamp

    @computed_field(alias="self")  # type: ignore[prop-decorator]
    @property
    def self_uri(self) -> str:
        return integration_key_uri(self.id)


class SectionPrice(Representation):
    base: Money
    current: Money  # the base price until price modifiers exist
    expires: Timestamp  # when the current price stops applying: the end of sales


class Section(Representation):
    """An event section with its counters, all read in one statement.

    `reserved` counts only live holds (a lapsed hold stops counting the moment it ends,
    swept or not), so `remaining = capacity - sold - reserved` is exact at every moment.
    """

    event_id: int = Field(exclude=True)
    section_id: int = Field(exclude=True)
    name: str
    description: str
    base_price: Money = Field(exclude=True)
    sales_start: Timestamp
    sales_end: Timestamp
    active: bool
    capacity: int
    sold: int
    reserved: int

    @computed_field(alias="self")  # type: ignore[prop-decorator]
    @property
    def self_uri(self) -> str:
        return section_uri(self.event_id, self.section_id)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def price(self) -> SectionPrice:
        return SectionPrice(base=self.base_price, current=self.base_price, expires=self.sales_end)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def remaining(self) -> int:
        return self.capacity - self.sold - self.reserved


class Event(Representation):
    """An event with its sections (each with its full URI as `self`)."""

    event_id: int = Field(exclude=True)
    title: str
    description: str
    start: Timestamp
    end: Timestamp
    host_number: str | None = Field(default=None, exclude=True)
    sections: list[Section] = Field(default_factory=list)

    @computed_field(alias="self")  # type: ignore[prop-decorator]
    @property
    def self_uri(self) -> str:
        return event_uri(self.event_id)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def host(self) -> str | None:
        """URI of the account that hosts the event (null when an integration key made it)."""
        return account_uri(self.host_number) if self.host_number else None


class TicketSection(Representation):
    """The section block of a ticket."""

    event_id: int = Field(exclude=True)
    section_id: int = Field(exclude=True)
    name: str
    description: str

    @computed_field(alias="self")  # type: ignore[prop-decorator]
    @property
    def self_uri(self) -> str:
        return section_uri(self.event_id, self.section_id)


class TicketOwner(Representation):
    """The owner block of a ticket (the documented subset of an account)."""

    number: str
    username: str
    email: str
    first_name: str | None = None
    last_name: str | None = None

    @computed_field(alias="self")  # type: ignore[prop-decorator]
    @property
    def self_uri(self) -> str:
        return account_uri(self.number)


class Ticket(Representation):
    """One ticket in a wallet. `redeemed` is the literal "N/A" until the ticket is used."""

    serial: str
    status: str
    section: TicketSection
    owner: TicketOwner
    issued: Timestamp
    order_number: str = Field(exclude=True)
    redeemed_at: AwareDatetime | None = Field(default=None, exclude=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def redeemed(self) -> str:
        return _iso_seconds(self.redeemed_at) if self.redeemed_at else "N/A"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def order(self) -> str:
        return order_uri(self.order_number)
