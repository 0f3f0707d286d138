"""GET /orders and GET /accounts/{n}/orders: filters, sorting, paging and who sees what."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from api.errors import PAGE_NOT_FOUND, RESTRICTED, invalid_arguments
from tests.conftest import ADMIN_KEY
from tests.http_helpers import expect_error, new_user
from tests.test_orders_http import new_section, place

ADMIN = {"X-API-Key": ADMIN_KEY}


@pytest.fixture(scope="module")
async def history(api_url: str, worker_process: Any) -> dict[str, Any]:
    """A customer with three orders (one cancelled), another with one."""
    async with httpx.AsyncClient(
        base_url=api_url, headers={"X-Client-Version": "3.0.0"}, timeout=30
    ) as http:
        account, key = await new_user(http)
        other, other_key = await new_user(http)
        stands = await new_section(http)
        headers = {"X-API-Key": key}
        numbers = []
        for _ in range(3):
            placed = await place(http, headers, {stands: 1})
            assert placed.status_code == 201, placed.text
            numbers.append(placed.json()["number"])
        assert (await http.delete(f"/orders/{numbers[1]}", headers=headers)).status_code == 200
        theirs = await place(http, {"X-API-Key": other_key}, {stands: 1})
        assert theirs.status_code == 201, theirs.text
    return {
        "account": account,
        "headers": headers,
        "numbers": numbers,
        "other": other,
        "other_headers": {"X-API-Key": other_key},
        "theirs": theirs.json()["number"],
    }


def numbers_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [order["number"] for order in response.json()["entries"]]


async def test_customers_see_their_own_orders_newest_first(client, history) -> None:
    mine = await client.get("/orders", headers=history["headers"])
    assert numbers_of(mine) == history["numbers"][::-1]
    assert mine.json()["total"] == 3
    oldest_first = await client.get(
        "/orders", params={"sort": "date", "order": "asc"}, headers=history["headers"]
    )
    assert numbers_of(oldest_first) == history["numbers"]
    own_filter = await client.get(
        "/orders", params={"customer": history["account"]["number"]}, headers=history["headers"]
    )
    assert numbers_of(own_filter) == history["numbers"][::-1]


async def test_a_customer_naming_another_customer_is_refused_before_validation(
    client, history
) -> None:
    params = {"customer": history["other"]["number"], "status": "Lost", "records": 0}
    expect_error(
        await client.get("/orders", params=params, headers=history["headers"]), 403, RESTRICTED
    )


async def test_staff_filter_on_customer_status_and_number(client, history) -> None:
    customer = history["account"]["number"]
    all_theirs = await client.get("/orders", params={"customer": customer}, headers=ADMIN)
    assert numbers_of(all_theirs) == history["numbers"][::-1]
    cancelled = await client.get(
        "/orders", params={"customer": customer, "status": "Cancelled"}, headers=ADMIN
    )
    assert numbers_of(cancelled) == [history["numbers"][1]]
    exact = await client.get("/orders", params={"number": f"^{history['theirs']}$"}, headers=ADMIN)
    assert numbers_of(exact) == [history["theirs"]]
    either = f"^({history['numbers'][0]}|{history['theirs']})$"
    both = await client.get("/orders", params={"number": either, "order": "asc"}, headers=ADMIN)
    assert numbers_of(both) == [history["numbers"][0], history["theirs"]]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("status", "Lost"),
        ("sort", "total"),
        ("order", "up"),
        ("number", "(unclosed"),
        ("number", "a{1,99999}"),
        ("page", "0"),
        ("records", "101"),
    ],
)
async def test_bad_list_arguments_are_400_naming_them(client, history, name, value) -> None:
    response = await client.get("/orders", params={name: value}, headers=ADMIN)
    assert response.status_code == 400, response.text
    assert response.json()["message"].startswith(invalid_arguments([name])), response.text


async def test_a_pathological_pattern_cannot_stall_the_database(client, history) -> None:
    """Nested quantifiers that backtrack badly: at most the statement timeout, then 400,
    and other requests are served meanwhile."""
    pattern = "^((((((.*)*)*)*)*)*)*(x|y|z){1,200}[^A-Z0-9]$"
    started = time.monotonic()
    slow, quick = await asyncio.gather(
        client.get("/orders", params={"number": pattern}, headers=ADMIN),
        client.get("/orders", params={"records": 1}, headers=history["headers"]),
    )
    assert time.monotonic() - started < 10
    assert slow.status_code in (200, 400), slow.text
    assert quick.status_code == 200


async def test_account_history_filters_on_status_and_pages(client, history) -> None:
    uri = f"/accounts/{history['account']['number']}/orders"
    placed = await client.get(uri, params={"status": "Cancelled"}, headers=history["headers"])
    assert numbers_of(placed) == [history["numbers"][1]]
    page_two = await client.get(uri, params={"records": 2, "page": 2}, headers=history["headers"])
    assert numbers_of(page_two) == [history["numbers"][0]]
    assert page_two.json() | {"entries": []} == {
        "total": 3,
        "page": 2,
        "records": 2,
        "entries": [],
    }
    expect_error(
        await client.get(uri, params={"records": 2, "page": 3}, headers=history["headers"]),
        404,
        PAGE_NOT_FOUND,
    )
    expect_error(await client.get(uri, headers=history["other_headers"]), 403, RESTRICTED)
