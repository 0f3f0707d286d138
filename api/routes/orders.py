"""Orders: place, read, list, cancel, pay and settle.

Routes check who may do what, then hand over to the order workflow (for anything that
changes an order) or to db/orders.py (for reads). Placing is the hot path: one pre-check
query, then one Update-With-Start round trip to Temporal.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import (
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.card_gateway import CardPayment, TestCardGateway, check_card
from api.dependencies import Database, OrderWorkflowsDep, SettingsDep
from api.errors import (
    KEY_ERRORS,
    bad_request,
    conflict,
    error_responses,
    invalid_arguments,
    location_header,
    not_found,
    restricted,
    unavailable,
)
from api.idempotency import Answer, IdempotencyKey, fingerprint, respond_once
from api.order_requests import OrderRequest, parse_customer, parse_items
from api.pagination import Page, PageParams, page_of
from api.security import AnyCallerDep, Caller, CallerDep, client_version_header
from api.text import RequestBody, storable
from config import Settings
from db import orders as order_db
from domain import (
    Amount,
    Order,
    OrderStatus,
    PaidAmount,
    PaymentOutcome,
    PaymentRecord,
    PaymentSource,
    PlaceOrder,
    Role,
    Settlement,
    SettlementResult,
    Timestamp,
    order_uri,
)
from workflows.client import OrderWorkflows
from workflows.order import ORDER_CONFLICT, ORDER_REJECTED, ORDER_UNAVAILABLE

router = APIRouter(tags=["Orders"], dependencies=[Depends(client_version_header)])

_NO_ORDER = "No order has that number"
_READ_403 = "Key unknown or ended, or neither the order's customer, staff nor a payments key"
_ACT_403 = "Key unknown or ended, or neither the order's customer nor staff"
_REPLAYED_HEADER = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the remembered answer to an earlier request "
        "with the same Idempotency-Key",
        "schema": {"type": "string", "enum": ["true"]},
    }
}
RETRY_PLACEMENT = (
    "The order could not be confirmed in time. Retry with the same Idempotency-Key to get "
    "its outcome."
)
CHECK_BEFORE_RETRYING = (
    "The order could not be confirmed in time. It may still be placed: check GET /orders "
    "before ordering again, and send an Idempotency-Key to make retries safe."
)
_REFUND_DUE = "The order is no longer awaiting payment; the payment is recorded as a refund due."
_ORDER_NUMBER_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

card_gateway = TestCardGateway()


def new_order_number() -> str:
    """Opaque, uppercase, unguessable; never reused for another order."""
    return "".join(secrets.choice(_ORDER_NUMBER_ALPHABET) for _ in range(12))


def _may_read(caller: Caller, customer_number: str) -> bool:
    return caller.is_staff or caller.is_payments or caller.owns(customer_number)


def _may_act(caller: Caller, customer_number: str) -> bool:
    return caller.is_staff or caller.owns(customer_number)


async def _order_for(db: Database, number: str, caller: Caller, *, act: bool) -> Order:
    """The order if it exists and the caller may see (or act on) it: else 404 / 403."""
    if not storable(number):  # cannot name an order (nor be sent to PostgreSQL)
        raise not_found()
    async with db.acquire() as conn:
        order = await order_db.get_order(conn, number)
    if order is None:
        raise not_found()
    allowed = _may_act if act else _may_read
    if not allowed(caller, order.customer.number):
        raise restricted()
    return order


def _update_error(error: WorkflowUpdateFailedError) -> Exception:
    cause = error.cause
    if isinstance(cause, ApplicationError):
        if cause.type == ORDER_REJECTED:
            return bad_request(cause.message)
        if cause.type == ORDER_CONFLICT:
            return conflict(cause.message)
        if cause.type == ORDER_UNAVAILABLE:
            return unavailable(cause.message)
    return unavailable()


# --- Placing -----------------------------------------------------------------------------


@router.post(
    "/orders",
    status_code=201,
    response_model=Order,
    responses={
        201: {"headers": location_header("The new order") | _REPLAYED_HEADER},
        **error_responses(
            *KEY_ERRORS,
            400,
            409,
            422,
            _400="An argument is invalid: the text names it and says why (for example, "
            "which section has too few tickets left)",
            _403="Key unknown or ended, a payments key, a customer or host ordering for "
            "another account, or a deactivated customer",
            _409="A request with this Idempotency-Key is still being processed, or its "
            "earlier attempt failed",
        ),
    },
    summary="Place a new order",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": OrderRequest.model_json_schema()}},
        }
    },
)
async def place_order(
    request: Request,
    caller: CallerDep,
    db: Database,
    settings: SettingsDep,
    order_workflows: OrderWorkflowsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Hold tickets in one or more sections. A free order is fulfilled at once.

    With an `Idempotency-Key`, a retry of the same request answers with the same order.
    """
    body = await _json_object(request)

    async def place(number: str) -> Answer:
        order = await _place(
            body, number, caller, db, settings, order_workflows, keyed=idempotency_key is not None
        )
        return 201, order.model_dump(mode="json", by_alias=True), {"Location": order_uri(number)}

    return await respond_once(
        db, caller, idempotency_key, fingerprint("POST", "/orders", body), new_order_number, place
    )


async def _place(
    body: dict[str, Any],
    number: str,
    caller: Caller,
    db: asyncpg.Pool,
    settings: Settings,
    order_workflows: OrderWorkflows,
    *,
    keyed: bool,
) -> Order:
    customer = parse_customer(body.get("customer"))
    customer = _customer_for(caller, customer)
    lines = parse_items(
        body.get("items"), settings.max_tickets_per_section, settings.max_sections_per_order
    )

    async with db.acquire() as conn:
        # The caller's own account is known to exist and be active (require_caller checked
        # it); only an order for someone else needs the lookup.
        if customer != caller.account_number:
            account = await conn.fetchrow(
                "SELECT activated FROM accounts WHERE number = $1", customer
            )
            if account is None:
                raise bad_request(invalid_arguments(["customer"], "No account has that number."))
            if not account["activated"]:
                raise restricted()
        sections = await order_db.section_availability(conn, [ln.section_id for ln in lines])
    now = datetime.now(UTC)
    for line in lines:
        section = sections.get(line.section_id)
        problem = order_db.line_problem(line, section, now)
        if problem is None and section is not None and section["remaining"] < line.quantity:
            problem = order_db.shortage(line, section["remaining"])
        if problem is not None:
            raise bad_request(invalid_arguments(["items"], problem))

    placement = PlaceOrder(
        number=number,
        customer_number=customer,
        lines=lines,
        reservation_seconds=settings.reservation_seconds,
        settlement_grace_seconds=settings.settlement_grace_seconds,
        max_tickets_per_section=settings.max_tickets_per_section,
    )
    try:
        return await order_workflows.place(placement)
    except WorkflowUpdateFailedError as error:
        raise _update_error(error) from None
    except (WorkflowUpdateRPCTimeoutOrCancelledError, RPCError):
        raise unavailable(RETRY_PLACEMENT if keyed else CHECK_BEFORE_RETRYING) from None
    except WorkflowAlreadyStartedError:
        # A retried key whose first attempt already finished: its order, if it made one.
        async with db.acquire() as conn:
            order = await order_db.get_order(conn, number)
        if order is None:
            raise conflict(
                "The earlier attempt with this Idempotency-Key failed; retry with a new key."
            ) from None
        return order


async def _json_object(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than json can parse
        raise bad_request(invalid_arguments(["body"], "The body must be a JSON object.")) from None
    if not isinstance(body, dict):
        raise bad_request(invalid_arguments(["body"], "The body must be a JSON object."))
    return body


def _customer_for(caller: Caller, customer: str | None) -> str:
    """Whom the order is for. Customers and hosts order only for themselves (403)."""
    if caller.is_payments:
        raise restricted()
    if caller.role in (Role.CUSTOMER, Role.HOST):
        if customer is not None and not caller.owns(customer):
            raise restricted()
        assert caller.account_number is not None
        return caller.account_number
    if customer is None:
        if caller.account_number is None:
            raise bad_request(
                "The following arguments are required, but have not been supplied: customer."
            )
        return caller.account_number
    return customer


# --- Reading -----------------------------------------------------------------------------


def order_list_customer(
    caller: AnyCallerDep,
    customer: Annotated[
        str | None,
        Query(description="Account number; customers and hosts may name only their own"),
    ] = None,
) -> str | None:
    """Whose orders a list may show: staff and payments keys anyone's (or everyone's, with
    no filter), others only their own. A dependency, so the 403 comes before any 400."""
    if caller.is_staff or caller.is_payments:
        if customer is not None and not storable(customer):
            raise bad_request(invalid_arguments(["customer"]))
        return customer
    if customer is not None and not caller.owns(customer):
        raise restricted()
    return caller.account_number


@router.get(
    "/orders",
    response_model=Page[Order],
    responses=error_responses(
        *KEY_ERRORS,
        400,
        404,
        _400="A filter, `page` or `records` is invalid (`number` must be a regular expression)",
        _403="Key unknown or ended, or a customer filtering on another customer",
        _404="A page past the last",
    ),
    summary="List orders",
)
async def list_orders(
    customer: Annotated[str | None, Depends(order_list_customer)],
    db: Database,
    paging: PageParams,
    status: Annotated[OrderStatus | None, Query()] = None,
    number: Annotated[
        str | None, Query(max_length=200, description="Regular expression on the order number")
    ] = None,
    sort: Annotated[Literal["date"], Query()] = "date",
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
) -> Page[Order]:
    """Staff and payments keys see every order; everybody else only their own."""
    if number is not None and not storable(number):
        raise bad_request(invalid_arguments(["number"]))
    async with db.acquire() as conn:
        try:
            total, entries = await order_db.list_orders(
                conn,
                customer_number=customer,
                status=status,
                number_pattern=number,
                descending=order == "desc",
                offset=paging.offset,
                limit=paging.limit,
            )
        except order_db.InvalidPattern:
            raise bad_request(
                invalid_arguments(["number"], "It must be a valid, simple regular expression.")
            ) from None
    return page_of(total, entries, paging)


@router.get(
    "/orders/{number}",
    response_model=Order,
    responses=error_responses(*KEY_ERRORS, 404, _403=_READ_403, _404=_NO_ORDER),
    summary="Retrieve an order",
)
async def get_order(number: str, caller: AnyCallerDep, db: Database) -> Order:
    """The order, to its customer, staff and payments keys."""
    return await _order_for(db, number, caller, act=False)


# --- Cancelling --------------------------------------------------------------------------


class Message(BaseModel):
    message: str


@router.delete(
    "/orders/{number}",
    response_model=Message,
    responses=error_responses(
        *KEY_ERRORS,
        404,
        409,
        _403=_ACT_403,
        _404=_NO_ORDER,
        _409="The order is not Placed any more",
    ),
    summary="Cancel an order",
)
async def cancel_order(
    number: str, caller: CallerDep, db: Database, order_workflows: OrderWorkflowsDep
) -> Message:
    """Held tickets go back on sale at once. Only a `Placed` order can be cancelled (409)."""
    order = await _order_for(db, number, caller, act=True)
    if order.status is not OrderStatus.PLACED:
        raise conflict(f"The order cannot be cancelled: it is {order.status}.")
    try:
        await order_workflows.cancel(number)
    except WorkflowUpdateFailedError as error:
        raise _update_error(error) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise unavailable() from None
    return Message(message="The order has been cancelled.")


# --- Paying and settling -----------------------------------------------------------------


class PaymentAttempt(BaseModel):
    """Answer of `POST /orders/{number}/payments`."""

    date: Timestamp
    amount: Amount
    status: Literal["Authorised", "Declined"]


@router.post(
    "/orders/{number}/payments",
    status_code=201,
    response_model=PaymentAttempt,
    responses={
        201: {"headers": _REPLAYED_HEADER},
        **error_responses(
            *KEY_ERRORS,
            400,
            404,
            409,
            422,
            _400="Card or billing data missing or invalid (never echoed back)",
            _403=_ACT_403,
            _404=_NO_ORDER,
            _409="The order is not Placed any more (an authorisation made meanwhile is "
            "voided), or a request with this Idempotency-Key is still being processed",
        ),
    },
    summary="Pay for an order by card",
)
async def pay_order(
    number: str,
    card: CardPayment,
    caller: CallerDep,
    db: Database,
    order_workflows: OrderWorkflowsDep,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Authorise the card for the order total; on success the order is fulfilled.

    A decline is still 201 (`Declined`) and the order stays `Placed` for another try. If the
    order ends while the card is being authorised, the authorisation is voided and the answer
    is 409.
    """
    # The fingerprint never sees the full card number or the CVV.
    card_shape = card.model_dump(exclude={"number", "cvv"}) | {"last4": card.number[-4:]}

    async def pay(_: str) -> Answer:
        attempt = await _pay(number, card, caller, db, order_workflows)
        return 201, attempt.model_dump(mode="json"), {}

    return await respond_once(
        db,
        caller,
        idempotency_key,
        fingerprint("POST", f"/orders/{number}/payments", card_shape),
        lambda: "",
        pay,
    )


async def _pay(
    number: str,
    card: CardPayment,
    caller: Caller,
    db: asyncpg.Pool,
    order_workflows: OrderWorkflows,
) -> PaymentAttempt:
    order = await _order_for(db, number, caller, act=True)
    now = datetime.now(UTC)
    check_card(card, now)
    if order.status is not OrderStatus.PLACED:
        raise conflict(f"The order cannot be paid: it is {order.status}.")

    authorisation = await card_gateway.authorise(card, order.total)
    settlement = Settlement(
        reference=authorisation.reference,
        amount=order.total,
        source=PaymentSource.CARD,
        card_last4=card.number[-4:],
    )
    if not authorisation.approved:
        async with db.acquire() as conn:
            await order_db.record_payment(
                conn, number, str(uuid.uuid4()), settlement, PaymentOutcome.DECLINED
            )
        return PaymentAttempt(date=now, amount=order.total, status="Declined")

    try:
        result = await order_workflows.apply_payment(number, settlement)
    except (WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError, RPCError) as error:
        await card_gateway.void(authorisation.reference)
        if isinstance(error, WorkflowUpdateFailedError):
            raise _update_error(error) from None
        raise unavailable() from None
    if result.outcome is not PaymentOutcome.AUTHORISED:
        await card_gateway.void(authorisation.reference)
        raise conflict(f"The order cannot be paid: it is {result.order.status}.")
    return PaymentAttempt(date=now, amount=order.total, status="Authorised")


class SettlementRequest(RequestBody):
    """Body of `POST /orders/{number}/settlements` (the `settle` signal's argument)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"reference": "pay_8f3a2c", "amount": 47.97}]}
    )

    reference: str = Field(min_length=1, max_length=200, examples=["pay_8f3a2c"])
    # Bounded (domain.PaidAmount) so any amount can be recorded: a wrong one is refused and
    # recorded, but 1e-20000 is no PostgreSQL numeric.
    amount: PaidAmount = Field(
        description="Amount paid: a JSON number or a decimal string (at most 14 digits "
        "before the point and 10 after)",
        examples=["47.97"],
    )


@router.post(
    "/orders/{number}/settlements",
    status_code=201,
    response_model=PaymentRecord,
    responses=error_responses(
        *KEY_ERRORS,
        400,
        404,
        409,
        _400="reference or amount missing or invalid",
        _403="Key unknown or ended, or neither a payments key nor an administrator",
        _404=_NO_ORDER,
        _409="The order is not Placed any more; the payment is recorded as a refund due",
    ),
    summary="Settle an order (payment services)",
)
async def settle_order(
    number: str,
    body: SettlementRequest,
    caller: AnyCallerDep,
    db: Database,
    order_workflows: OrderWorkflowsDep,
) -> PaymentRecord:
    """For payment services that cannot reach Temporal; same rules as the `settle` signal.

    201 with the recorded outcome; 409 when the order is no longer `Placed`, in which case
    the payment is recorded as a refund due.
    """
    if not (caller.is_payments or caller.is_administrator):
        raise restricted()
    await _order_for(db, number, caller, act=False)
    settlement = Settlement(reference=body.reference, amount=body.amount, source=PaymentSource.HTTP)
    try:
        result: SettlementResult = await order_workflows.apply_payment(number, settlement)
    except RPCError as error:
        if error.status is not RPCStatusCode.NOT_FOUND:
            raise unavailable() from None
        # The workflow's grace period is over: record the late payment ourselves.
        async with db.acquire() as conn:
            await order_db.record_payment(
                conn,
                number,
                str(uuid.uuid4()),
                settlement,
                PaymentOutcome.REFUND_DUE,
                "The order had ended.",
            )
        raise conflict(_REFUND_DUE) from None
    except WorkflowUpdateFailedError as error:
        raise _update_error(error) from None
    except WorkflowUpdateRPCTimeoutOrCancelledError:
        raise unavailable() from None
    if result.outcome is PaymentOutcome.REFUND_DUE:
        raise conflict(_REFUND_DUE)
    return PaymentRecord(
        reference=settlement.reference,
        date=datetime.now(UTC),
        amount=settlement.amount,
        source=settlement.source,
        outcome=result.outcome,
    )


@router.get(
    "/orders/{number}/payments",
    response_model=list[PaymentRecord],
    responses=error_responses(*KEY_ERRORS, 404, _403=_READ_403, _404=_NO_ORDER),
    summary="List payment and settlement attempts",
)
async def list_payments(number: str, caller: AnyCallerDep, db: Database) -> list[PaymentRecord]:
    """Every attempt with its outcome, including refunds due for payments that came late."""
    await _order_for(db, number, caller, act=False)
    async with db.acquire() as conn:
        return await order_db.list_payments(conn, number)
