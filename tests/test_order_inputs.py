"""Order inputs at their edges, as found by probing and fuzzing the live API."""

from __future__ import annotations

import httpx

from api.errors import invalid_arguments
from tests.conftest import ADMIN_KEY
from tests.http_helpers import expect_error
from tests.test_orders_http import customer, new_section, place

__all__ = ["customer"]  # the fixture, shared with the order tests


async def _payments_key(client: httpx.AsyncClient) -> dict[str, str]:
    created = await client.post(
        "/integration-keys",
        json={"name": "psp", "level": "payments"},
        headers={"X-API-Key": ADMIN_KEY},
    )
    assert created.status_code == 201, created.text
    return {"X-API-Key": created.json()["key"]}


async def test_settlement_amounts_that_cannot_be_recorded_are_400_and_harm_nothing(
    client, customer
) -> None:
    """1e-20000 used to reach the workflow, whose activity could not store it and retried
    forever, so every later action on the order timed out (503). Now: 400 at the door, and
    the order settles normally afterwards."""
    _, headers = customer
    psp = await _payments_key(client)
    order = (await place(client, headers, {await new_section(client): 1})).json()
    uri = f"{order['self']}/settlements"

    for amount in ("1e-20000", "1e200000", 1e308, "NaN", "Infinity", "12.34567890123"):
        response = await client.post(uri, json={"reference": "x", "amount": amount}, headers=psp)
        expect_error(response, 400, invalid_arguments(["amount"]))

    # A wrong amount that can be stored is refused and recorded, as the contract says.
    wrong = await client.post(uri, json={"reference": "w", "amount": "12.345"}, headers=psp)
    assert wrong.status_code == 201, wrong.text
    assert (wrong.json()["outcome"], wrong.json()["amount"]) == ("Refused: wrong amount", 12.345)

    right = await client.post(uri, json={"reference": "r", "amount": order["total"]}, headers=psp)
    assert right.status_code == 201, right.text
    assert right.json()["outcome"] == "Settled"
    settled = await client.get(order["self"], headers=headers)
    assert settled.json()["status"] == "Fulfilled"
