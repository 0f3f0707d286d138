"""Orders end to end over HTTP: the real API, worker, Temporal dev server and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from temporalio.client import Client

from domain import Settlement, order_workflow_id
from tests.conftest import ADMIN_KEY
from tests.http_helpers import CARD, expect_error, new_user
from workflows.order import OrderWorkflow

ADMIN = {"X-API-Key": ADMIN_KEY}


async def new_section(client: httpx.AsyncClient, price: str = "45.00", capacity: int = 20) -> str:
    """A fresh event section on sale now; returns its URI."""
    now = datetime.now(UTC)
    event = await client.post(
        "/events",
        headers=ADMIN,
        json={
            "title": "Test Night",
            "description": "Tests",
            "start": (now + timedelta(days=30)).isoformat(),
            "end": (now + timedelta(days=30, hours=3)).isoformat(),
        },
    )
    assert event.status_code == 201, event.text
    section = await client.post(
        f"{event.json()['self']}/sections",
        headers=ADMIN,
        json={
            "name": f"Section at {price}",
            "description": "Seats",
            "basePrice": float(price),
            "salesStart": (now - timedelta(days=1)).isoformat(),
            "salesEnd": (now + timedelta(days=20)).isoformat(),
            "capacity": capacity,
        },
    )
    assert section.status_code == 201, section.text
    return section.json()["self"]


async def counts(client: httpx.AsyncClient, uri: str) -> dict[str, int]:
    response = await client.get(uri, headers=ADMIN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["sold"] + body["reserved"] + body["remaining"] == body["capacity"]
    return {key: body[key] for key in ("sold", "reserved", "remaining")}


@pytest.fixture
async def customer(client: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, str]]:
    account, key = await new_user(client)
    return account, {"X-API-Key": key}


async def place(
    client: httpx.AsyncClient, headers: dict[str, str], items: dict[str, Any]
) -> httpx.Response:
    return await client.post("/orders", headers=headers, json={"items": items})


async def test_place_order_over_two_sections_holds_exactly_the_quantities(client, customer):
    account, headers = customer
    stands, box = await new_section(client, "45.00"), await new_section(client, "120.00")

    response = await place(client, headers, {stands: 2, box: 1})

    assert response.status_code == 201, response.text
    order = response.json()
    assert response.headers["Location"] == order["self"] == f"/orders/{order['number']}"
    assert order["status"] == "Placed"
    assert (order["subtotal"], order["fees"], order["total"]) == (210.0, 4.97, 214.97)
    assert {(i["section"], i["price"], i["quantity"]) for i in order["items"]} == {
        (stands, 45.0, 2),
        (box, 120.0, 1),
    }
    assert order["customer"]["number"] == account["number"]
    assert order["payments"] == f"/orders/{order['number']}/payments"
    assert order["expires"].endswith("+00:00") and order["placed"].endswith("+00:00")
    assert await counts(client, stands) == {"sold": 0, "reserved": 2, "remaining": 18}
    assert await counts(client, box) == {"sold": 0, "reserved": 1, "remaining": 19}
    fetched = await client.get(order["self"], headers=headers)
    assert fetched.json() == order


async def test_paying_with_the_test_card_fulfils_and_issues_one_ticket_per_unit(client, customer):
    account, headers = customer
    stands = await new_section(client, "45.00")
    order = (await place(client, headers, {stands: 3})).json()

    paid = await client.post(f"{order['self']}/payments", headers=headers, json=CARD)

    assert paid.status_code == 201, paid.text
    assert paid.json()["status"] == "Authorised" and paid.json()["amount"] == order["total"]
    assert (await client.get(order["self"], headers=headers)).json()["status"] == "Fulfilled"
    wallet = (await client.get(f"/accounts/{account['number']}/tickets", headers=headers)).json()
    assert sum(1 for ticket in wallet["entries"] if ticket["section"]["self"] == stands) == 3
    assert await counts(client, stands) == {"sold": 3, "reserved": 0, "remaining": 17}
    payments = await client.get(f"{order['self']}/payments", headers=headers)
    assert [(p["outcome"], p["cardLast4"]) for p in payments.json()] == [("Authorised", "4242")]
    assert "4242424242424242" not in payments.text
    again = await client.post(f"{order['self']}/payments", headers=headers, json=CARD)
    assert again.status_code == 409


async def test_a_declined_card_leaves_the_order_placed(client, customer):
    _, headers = customer
    stands = await new_section(client)
    order = (await place(client, headers, {stands: 1})).json()

    declined = await client.post(
        f"{order['self']}/payments", headers=headers, json=CARD | {"number": "4000000000000002"}
    )

    assert declined.status_code == 201 and declined.json()["status"] == "Declined"
    assert (await client.get(order["self"], headers=headers)).json()["status"] == "Placed"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("number", "4242424242424241"),
        ("expiryDate", "01/20"),
        ("cvv", "12"),
        ("number", None),
        # Digits that str.isdigit() accepts but no card has (these were 500s, or authorised).
        ("number", "\uff14\uff12\uff14\uff12" * 4),
        ("number", "424242424242424\u00b2"),
        ("expiryDate", "1\u00b2/30"),
        ("expiryDate", "\uff11\uff12/\uff13\uff10"),
        ("cvv", "\uff11\uff12\uff13"),
    ],
)
async def test_bad_card_data_is_a_400_that_never_echoes_the_card(client, customer, field, value):
    _, headers = customer
    order = (await place(client, headers, {await new_section(client): 1})).json()
    card = {k: v for k, v in CARD.items() if k != field} if value is None else CARD | {field: value}

    response = await client.post(f"{order['self']}/payments", headers=headers, json=card)

    assert response.status_code == 400
    assert field in response.json()["message"] and "424242" not in response.text


async def test_cancel_puts_the_tickets_back_at_once_and_only_once(client, customer):
    _, headers = customer
    stands = await new_section(client)
    order = (await place(client, headers, {stands: 4})).json()

    cancelled = await client.delete(order["self"], headers=headers)

    assert cancelled.status_code == 200 and "message" in cancelled.json()
    assert (await client.get(order["self"], headers=headers)).json()["status"] == "Cancelled"
    assert await counts(client, stands) == {"sold": 0, "reserved": 0, "remaining": 20}
    assert (await client.delete(order["self"], headers=headers)).status_code == 409
    paid = await client.post(f"{order['self']}/payments", headers=headers, json=CARD)
    assert paid.status_code == 409


async def test_an_unpaid_order_times_out_and_its_tickets_come_back(client, customer):
    _, headers = customer
    stands = await new_section(client)
    order = (await place(client, headers, {stands: 2})).json()
    assert (await counts(client, stands))["reserved"] == 2

    status = "Placed"
    for _ in range(60):
        await asyncio.sleep(0.5)
        status = (await client.get(order["self"], headers=headers)).json()["status"]
        if status != "Placed":
            break

    assert status == "Timed Out"
    assert await counts(client, stands) == {"sold": 0, "reserved": 0, "remaining": 20}
    late = await client.post(f"{order['self']}/payments", headers=headers, json=CARD)
    assert late.status_code == 409


async def test_a_free_order_is_fulfilled_in_the_201_with_tickets_in_the_wallet(client, customer):
    account, headers = customer
    lawn = await new_section(client, "0.00")

    response = await place(client, headers, {lawn: 2})

    assert response.status_code == 201
    order = response.json()
    assert (order["status"], order["total"], order["fees"], order["expires"]) == (
        "Fulfilled",
        0,
        0,
        None,
    )
    wallet = (await client.get(f"/accounts/{account['number']}/tickets", headers=headers)).json()
    assert sum(1 for ticket in wallet["entries"] if ticket["section"]["self"] == lawn) == 2
    assert await counts(client, lawn) == {"sold": 2, "reserved": 0, "remaining": 18}


async def test_sold_out_is_a_400_naming_the_section_and_holds_nothing(client, customer):
    _, headers = customer
    small, other = await new_section(client, capacity=3), await new_section(client)

    response = await place(client, headers, {other: 1, small: 4})

    assert response.status_code == 400
    assert small in response.json()["message"] and "3 tickets left" in response.json()["message"]
    assert await counts(client, other) == {"sold": 0, "reserved": 0, "remaining": 20}


MALFORMED_ITEMS = {
    "unknown section": lambda uri: {"/events/1/sections/999999999": 1},
    "malformed uri": lambda uri: {"/sections/12": 1},
    "quantity 0": lambda uri: {uri: 0},
    "quantity -1": lambda uri: {uri: -1},
    "quantity 1.5": lambda uri: {uri: 1.5},
    "quantity 2.0": lambda uri: {uri: 2.0},
    'quantity "2"': lambda uri: {uri: "2"},
    "quantity true": lambda uri: {uri: True},
    "quantity null": lambda uri: {uri: None},
    "quantity 10**20": lambda uri: {uri: 10**20},
    "over the cap": lambda uri: {uri: 21},
    "empty items": lambda uri: {},
    "items not an object": lambda uri: [uri],
    "one section spelled twice": lambda uri: {uri: 1, uri + "/": 1},
}


@pytest.mark.parametrize("case", list(MALFORMED_ITEMS))
async def test_invalid_items_are_a_400_and_nothing_is_held(client, customer, case):
    _, headers = customer
    stands = await new_section(client)

    response = await place(client, headers, MALFORMED_ITEMS[case](stands))

    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(
        "The following arguments have invalid values: items."
    )
    assert await counts(client, stands) == {"sold": 0, "reserved": 0, "remaining": 20}


async def test_a_deeply_nested_body_and_a_trailing_slash_are_clean_4xx(client, customer):
    _, headers = customer
    nested = '{"items": ' + "[" * 5000 + "]" * 5000 + "}"

    deep = await client.post(
        "/orders", headers=headers | {"Content-Type": "application/json"}, content=nested
    )
    slash = await client.get("/orders/", headers=headers)

    expect_error(
        deep,
        400,
        "The following arguments have invalid values: body. The body must be a JSON object.",
    )
    expect_error(slash, 404, "There is presently no resource with the given URI.")


async def test_missing_items_and_unknown_customer_are_400s(client, customer):
    _, headers = customer
    missing = await client.post("/orders", headers=headers, json={})
    expect_error(
        missing, 400, "The following arguments are required, but have not been supplied: items."
    )
    stands = await new_section(client)
    unknown = await client.post(
        "/orders", headers=ADMIN, json={"customer": "ZZ-00000000", "items": {stands: 1}}
    )
    assert unknown.status_code == 400
    assert unknown.json()["message"].startswith(
        "The following arguments have invalid values: customer."
    )
    assert await counts(client, stands) == {"sold": 0, "reserved": 0, "remaining": 20}


async def test_header_rules_and_ordering_for_someone_else(client, customer, api_url):
    account, headers = customer
    other, _ = await new_user(client)
    stands = await new_section(client)
    body = {"items": {stands: 1}}
    async with httpx.AsyncClient(base_url=api_url) as bare:
        expect_error(
            await bare.post("/orders", json=body),
            412,
            "Please upgrade your client to complete this request",
        )
        old = await bare.post("/orders", json=body, headers={"X-Client-Version": "2.9.9"})
        assert old.status_code == 412
    expect_error(
        await client.post("/orders", json=body), 401, "Your request could not be authenticated."
    )
    restricted = "You are restricted from accessing this resource."
    expect_error(
        await client.post("/orders", json=body, headers={"X-API-Key": "0" * 32}), 403, restricted
    )
    as_other = {"customer": other["number"], "items": {stands: "not even valid"}}
    expect_error(await client.post("/orders", json=as_other, headers=headers), 403, restricted)
    for_self = await client.post(
        "/orders", json=body | {"customer": account["number"]}, headers=headers
    )
    assert for_self.status_code == 201
    expect_error(
        await client.get(
            for_self.json()["self"], headers={"X-API-Key": (await new_user(client))[1]}
        ),
        403,
        restricted,
    )


async def test_a_payment_service_settles_with_the_signal(client, customer, temporal_client: Client):
    _, headers = customer
    stands = await new_section(client)
    order = (await place(client, headers, {stands: 2})).json()

    handle = temporal_client.get_workflow_handle(order_workflow_id(order["number"]))
    await handle.signal(
        OrderWorkflow.settle, Settlement(reference="psp-1", amount=Decimal(str(order["total"])))
    )

    status = "Placed"
    for _ in range(40):
        status = (await client.get(order["self"], headers=headers)).json()["status"]
        if status == "Fulfilled":
            break
        await asyncio.sleep(0.25)
    assert status == "Fulfilled"
    assert await counts(client, stands) == {"sold": 2, "reserved": 0, "remaining": 18}
    query = f'OrderStatus = "Fulfilled" AND CustomerNumber = "{order["customer"]["number"]}"'
    found: list[str] = []
    for _ in range(40):
        found = [wf.id async for wf in temporal_client.list_workflows(query)]
        if handle.id in found:
            break
        await asyncio.sleep(0.25)
    assert handle.id in found


async def test_settlements_over_http_and_a_late_payment_is_a_refund_due(client, customer):
    _, headers = customer
    payments_key = (
        await client.post(
            "/integration-keys", headers=ADMIN, json={"name": "psp", "level": "payments"}
        )
    ).json()["key"]
    psp = {"X-API-Key": payments_key}
    stands = await new_section(client)
    order = (await place(client, headers, {stands: 1})).json()

    wrong = await client.post(
        f"{order['self']}/settlements", headers=psp, json={"reference": "r0", "amount": "1.00"}
    )
    assert wrong.status_code == 201 and wrong.json()["outcome"] == "Refused: wrong amount"
    assert (await client.delete(order["self"], headers=headers)).status_code == 200
    late = await client.post(
        f"{order['self']}/settlements",
        headers=psp,
        json={"reference": "r1", "amount": order["total"]},
    )
    assert late.status_code == 409
    # The payment service retries the same late payment: owed back once, not twice.
    retried = await client.post(
        f"{order['self']}/settlements",
        headers=psp,
        json={"reference": "r1", "amount": order["total"]},
    )
    assert retried.status_code == 409
    outcomes = [
        p["outcome"] for p in (await client.get(f"{order['self']}/payments", headers=psp)).json()
    ]
    assert outcomes == ["Refused: wrong amount", "Refund due", "Refused: duplicate"]
    assert (await client.delete(order["self"], headers=psp)).status_code == 403


async def test_order_list_filters_and_rejects_a_bad_pattern(client, customer):
    _, headers = customer
    stands = await new_section(client)
    numbers = [(await place(client, headers, {stands: 1})).json()["number"] for _ in range(3)]

    mine = (await client.get("/orders", headers=headers, params={"order": "asc"})).json()
    assert [o["number"] for o in mine["entries"]] == numbers and mine["total"] == 3
    one = (
        await client.get("/orders", headers=headers, params={"number": f"^{numbers[1]}$"})
    ).json()
    assert [o["number"] for o in one["entries"]] == [numbers[1]]
    bad = await client.get("/orders", headers=headers, params={"number": "(unclosed"})
    assert bad.status_code == 400 and "number" in bad.json()["message"]
    past = await client.get("/orders", headers=headers, params={"page": 2})
    assert past.status_code == 404
