"""Accounts, sessions and integration keys, through the running API over HTTP."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from typing import Any

import asyncpg
import httpx
import pytest

from api.errors import (
    PAGE_NOT_FOUND,
    RESTRICTED,
    UNAUTHENTICATED,
    UPGRADE,
    invalid_arguments,
    missing_arguments,
)
from db.orders import new_ticket_serial
from tests import factories
from tests.conftest import ADMIN_KEY
from tests.http_helpers import expect_error, login, new_user, register, unique_name

ACCOUNT_NOT_FOUND = "The requested account could not be located"
WRONG_PASSWORD = "A session cannot be started with the given password."
KEY = re.compile(r"[0-9a-f]{32}")
NUMBER = re.compile(r"[A-Z0-9]{2}-[0-9A-Z]{8}")


# --- registration ------------------------------------------------------------------------


async def test_register_makes_a_customer(client: httpx.AsyncClient) -> None:
    username = unique_name()
    response = await client.post(
        "/accounts",
        json={
            "username": username,
            "password": "correct horse battery",
            "email": f"{username}@Example.com",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "title": "Ms",
            "dateOfBirth": "1990-12-10",
            "city": "London",
            "role": "administrator",  # ignored: self-registration
        },
    )
    assert response.status_code == 201, response.text
    account = response.json()
    assert NUMBER.fullmatch(account["number"])
    assert response.headers["Location"] == account["self"] == f"/accounts/{account['number']}"
    assert account["preferences"] == f"/accounts/{account['number']}/preferences"
    assert account["role"] == "customer"
    assert (account["verified"], account["activated"]) == (False, True)
    assert (account["firstName"], account["title"], account["dateOfBirth"]) == (
        "Ada",
        "Ms",
        "1990-12-10",
    )
    assert account["secondAddressLine"] is None
    assert not any("password" in field.lower() for field in account)


async def test_register_names_the_missing_arguments(client: httpx.AsyncClient) -> None:
    response = await client.post("/accounts", json={"email": "x@example.com"})
    expect_error(response, 400, missing_arguments(["username", "password"]))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("username", "no spaces"),
        ("username", "ab"),
        ("username", 12345),
        ("password", "short"),
        ("email", "not-an-email"),
        ("title", "Dr"),
        ("dateOfBirth", "10/12/1990"),
        ("dateOfBirth", "2999-01-01"),
        ("dateOfBirth", "1990-02-30"),
        ("dateOfBirth", 19901210),
    ],
)
async def test_register_names_the_invalid_argument(
    client: httpx.AsyncClient, field: str, value: Any
) -> None:
    username = unique_name()
    body = {"username": username, "password": "long enough 1", "email": f"{username}@example.com"}
    response = await client.post("/accounts", json=body | {field: value})
    expect_error(response, 400, invalid_arguments([field]))
    assert str(value) not in response.text


async def test_duplicates_conflict_whatever_the_case(client: httpx.AsyncClient) -> None:
    account, _ = await register(client)
    username, email = account["username"], account["email"]
    other = unique_name()

    same_name = {
        "username": username.upper(),
        "password": "long enough 1",
        "email": f"{other}@x.io",
    }
    response = await client.post("/accounts", json=same_name)
    expect_error(
        response, 409, "The following arguments conflict with those of another user: username."
    )

    same_email = {"username": other, "password": "long enough 1", "email": email.upper()}
    response = await client.post("/accounts", json=same_email)
    expect_error(
        response, 409, "The following arguments conflict with those of another user: email."
    )

    both = {"username": username, "password": "long enough 1", "email": email}
    response = await client.post("/accounts", json=both)
    expect_error(
        response,
        409,
        "The following arguments conflict with those of another user: username, email.",
    )


async def test_an_administrator_key_may_set_the_role(client: httpx.AsyncClient) -> None:
    account, _ = await register(client, ADMIN_KEY, role="host")
    assert account["role"] == "host"

    unknown_key = secrets.token_hex(16)
    username = unique_name()
    body = {"username": username, "password": "long enough 1", "email": f"{username}@example.com"}
    response = await client.post("/accounts", json=body, headers={"X-API-Key": unknown_key})
    expect_error(response, 403, RESTRICTED)


# --- sessions ----------------------------------------------------------------------------


async def test_session_starts_with_username_or_email(client: httpx.AsyncClient) -> None:
    account, password = await register(client)
    for identification in (account["username"], account["email"].upper()):
        response = await client.post(
            "/sessions", json={"identification": identification, "password": password}
        )
        assert response.status_code == 201, response.text
        session = response.json()
        assert session["self"] == "/sessions/active"
        assert session["open"] is True
        assert isinstance(session["id"], int)
        assert KEY.fullmatch(session["key"])
        # ISO-8601 with offset, as every date-time (the SDK's tests expect a space and no
        # zone; the contract wins).
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", session["started"])
        assert session["account"]["number"] == account["number"]

        active = await client.get("/sessions/active", headers={"X-API-Key": session["key"]})
        assert active.status_code == 200, active.text
        assert active.json() == session


async def test_session_refused_for_wrong_password_or_unknown_account(
    client: httpx.AsyncClient,
) -> None:
    account, _ = await register(client)
    secret = "not-the-password-xyz"
    response = await client.post(
        "/sessions", json={"identification": account["username"], "password": secret}
    )
    expect_error(response, 401, WRONG_PASSWORD)
    assert secret not in response.text

    response = await client.post(
        "/sessions", json={"identification": unique_name(), "password": "x"}
    )
    expect_error(response, 404, ACCOUNT_NOT_FOUND)

    response = await client.post("/sessions", json={"identification": account["username"]})
    expect_error(response, 400, missing_arguments(["password"]))


async def test_repeated_wrong_passwords_are_throttled(client: httpx.AsyncClient) -> None:
    account, password = await register(client)
    attempt = {"identification": account["username"], "password": "wrong password"}

    # A right password clears the count: four failures, a success, four failures again.
    for _ in range(4):
        expect_error(await client.post("/sessions", json=attempt), 401, WRONG_PASSWORD)
    await login(client, account["username"], password)
    for _ in range(5):
        expect_error(await client.post("/sessions", json=attempt), 401, WRONG_PASSWORD)

    # Now five failures in the window: even the right password is not checked.
    response = await client.post(
        "/sessions", json={"identification": account["username"], "password": password}
    )
    assert response.status_code == 429, response.text
    assert set(response.json()) == {"message", "error"}
    assert 15 * 60 - 60 <= int(response.headers["Retry-After"]) <= 15 * 60


async def test_concurrent_guesses_get_no_more_than_the_limit(client: httpx.AsyncClient) -> None:
    """Guesses sent all at once queue on the account: five are checked, the rest are 429."""
    account, _ = await register(client)
    attempt = {"identification": account["username"], "password": "wrong password"}
    responses = await asyncio.gather(*(client.post("/sessions", json=attempt) for _ in range(20)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [401] * 5 + [429] * 15


async def test_deactivated_account_cannot_start_a_session(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account, password = await register(client)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "UPDATE accounts SET activated = false WHERE number = $1", account["number"]
        )
    finally:
        await conn.close()
    response = await client.post(
        "/sessions", json={"identification": account["username"], "password": password}
    )
    expect_error(response, 403, RESTRICTED)


async def test_an_ended_session_key_is_refused_everywhere(client: httpx.AsyncClient) -> None:
    account, key = await new_user(client)
    headers = {"X-API-Key": key}
    assert (await client.get(f"/accounts/{account['number']}", headers=headers)).status_code == 200

    response = await client.delete("/sessions/active", headers=headers)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"message"}

    expect_error(await client.get("/sessions/active", headers=headers), 403, RESTRICTED)
    expect_error(await client.delete("/sessions/active", headers=headers), 403, RESTRICTED)
    expect_error(
        await client.get(f"/accounts/{account['number']}", headers=headers), 403, RESTRICTED
    )


async def test_an_integration_key_has_no_session(client: httpx.AsyncClient) -> None:
    headers = {"X-API-Key": ADMIN_KEY}
    expect_error(await client.get("/sessions/active", headers=headers), 403, RESTRICTED)
    expect_error(await client.delete("/sessions/active", headers=headers), 403, RESTRICTED)


# --- reading accounts --------------------------------------------------------------------


async def test_an_account_is_visible_to_itself_and_to_staff(client: httpx.AsyncClient) -> None:
    account, key = await new_user(client)
    other, other_key = await new_user(client)
    _, support_key = await new_user(client, role="support")
    uri = f"/accounts/{account['number']}"

    own = await client.get(uri, headers={"X-API-Key": key})
    assert own.status_code == 200
    assert own.json() == account

    expect_error(await client.get(uri, headers={"X-API-Key": other_key}), 403, RESTRICTED)
    # Probing numbers tells a customer nothing: an unknown one is 403 too.
    expect_error(
        await client.get("/accounts/ZZ-00000000", headers={"X-API-Key": key}), 403, RESTRICTED
    )

    for staff in (support_key, ADMIN_KEY):
        response = await client.get(uri, headers={"X-API-Key": staff})
        assert response.status_code == 200
        assert response.json()["number"] == account["number"]
    response = await client.get("/accounts/ZZ-00000000", headers={"X-API-Key": ADMIN_KEY})
    expect_error(response, 404, ACCOUNT_NOT_FOUND)
    assert other["number"] != account["number"]


async def test_account_lists_are_paginated_and_private(client: httpx.AsyncClient) -> None:
    account, key = await new_user(client)
    _, other_key = await new_user(client)
    headers = {"X-API-Key": key}
    for path in ("orders", "tickets"):
        uri = f"/accounts/{account['number']}/{path}"
        response = await client.get(uri, headers=headers)
        assert response.status_code == 200, response.text
        assert response.json() == {"total": 0, "page": 1, "records": 25, "entries": []}

        expect_error(
            await client.get(uri, params={"page": 2}, headers=headers), 404, PAGE_NOT_FOUND
        )
        for name, value in (("records", 0), ("records", 101), ("page", 0), ("page", "two")):
            response = await client.get(uri, params={name: value}, headers=headers)
            assert response.status_code == 400, response.text
            assert response.json()["message"].startswith(invalid_arguments([name]))
        # Permission is decided before the query string is read.
        response = await client.get(uri, params={"records": 0}, headers={"X-API-Key": other_key})
        expect_error(response, 403, RESTRICTED)

    response = await client.get(
        f"/accounts/{account['number']}/orders", params={"status": "Lost"}, headers=headers
    )
    expect_error(response, 400, invalid_arguments(["status"]))


async def _issue_tickets_directly(database_url: str, account_number: str, count: int) -> str:
    """A fulfilled order with `count` tickets, written in SQL; returns the order number."""
    conn = await asyncpg.connect(database_url)
    try:
        event_id = await factories.create_event(conn)
        section = await factories.create_section(conn, event_id, price="10.00")
        customer_id = await conn.fetchval(
            "SELECT id FROM accounts WHERE number = $1", account_number
        )
        number = f"T{secrets.token_hex(6).upper()}"
        await conn.execute(
            "INSERT INTO orders (number, customer_id, status, placed_at, subtotal, fees, total)"
            " VALUES ($1, $2, 'Fulfilled', now(), $3, 0, $3)",
            number,
            customer_id,
            10 * count,
        )
        for unit in range(1, count + 1):
            await conn.execute(
                "INSERT INTO tickets (serial, order_number, section_id, unit, owner_id)"
                " VALUES ($1, $2, $3, $4, $5)",
                new_ticket_serial(),
                number,
                section.section_id,
                unit,
                customer_id,
            )
        return number
    finally:
        await conn.close()


async def test_the_wallet_lists_the_accounts_tickets(
    client: httpx.AsyncClient, database_url: str
) -> None:
    account, key = await new_user(client)
    order_number = await _issue_tickets_directly(database_url, account["number"], 2)
    headers = {"X-API-Key": key}
    uri = f"/accounts/{account['number']}/tickets"

    wallet = await client.get(uri, params={"records": 1}, headers=headers)
    assert wallet.status_code == 200, wallet.text
    page = wallet.json()
    assert (page["total"], page["page"], page["records"]) == (2, 1, 1)
    ticket = page["entries"][0]
    assert re.fullmatch(r"[0-9A-Z]{6}-[0-9A-Z]{12}", ticket["serial"])
    assert ticket["status"] == "Issued"
    assert ticket["redeemed"] == "N/A"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", ticket["issued"])
    assert ticket["order"] == f"/orders/{order_number}"
    assert re.fullmatch(r"/events/\d+/sections/\d+", ticket["section"]["self"])
    assert set(ticket["section"]) == {"self", "name", "description"}
    assert ticket["owner"] == {
        "self": account["self"],
        "number": account["number"],
        "username": account["username"],
        "email": account["email"],
        "firstName": None,
        "lastName": None,
    }
    second = await client.get(uri, params={"records": 1, "page": 2}, headers=headers)
    assert second.json()["entries"][0]["serial"] != ticket["serial"]
    response = await client.get(uri, params={"records": 1, "page": 3}, headers=headers)
    expect_error(response, 404, PAGE_NOT_FOUND)

    staff = await client.get(uri, headers={"X-API-Key": ADMIN_KEY})
    assert staff.json()["total"] == 2


async def test_a_free_order_shows_in_the_history_and_the_wallet(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """End to end with the orders side: POST /orders of free tickets fills the wallet."""
    account, key = await new_user(client)
    conn = await asyncpg.connect(database_url)
    try:
        event_id = await factories.create_event(conn)
        section = await factories.create_section(conn, event_id, price="0.00", capacity=10)
    finally:
        await conn.close()
    headers = {"X-API-Key": key}
    placed = await client.post("/orders", json={"items": {section.uri: 2}}, headers=headers)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["status"] == "Fulfilled"

    orders = await client.get(
        f"/accounts/{account['number']}/orders", params={"status": "Fulfilled"}, headers=headers
    )
    assert orders.status_code == 200, orders.text
    assert [entry["number"] for entry in orders.json()["entries"]] == [order["number"]]
    none_placed = await client.get(
        f"/accounts/{account['number']}/orders", params={"status": "Placed"}, headers=headers
    )
    assert none_placed.json()["total"] == 0

    wallet = await client.get(f"/accounts/{account['number']}/tickets", headers=headers)
    tickets = wallet.json()["entries"]
    assert len(tickets) == 2
    assert {t["order"] for t in tickets} == {order["self"]}
    assert {t["section"]["self"] for t in tickets} == {section.uri}


# --- integration keys --------------------------------------------------------------------


async def test_only_administrators_create_integration_keys(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/integration-keys",
        json={"name": "payments service", "level": "payments"},
        headers={"X-API-Key": ADMIN_KEY},
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert KEY.fullmatch(created["key"])
    assert (created["name"], created["level"]) == ("payments service", "payments")
    assert created["self"] == f"/integration-keys/{created['id']}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", created["created"])

    # The new key works, with its level's permissions only.
    payments = {"X-API-Key": created["key"]}
    customer, key = await new_user(client)
    expect_error(
        await client.get(f"/accounts/{customer['number']}", headers=payments), 403, RESTRICTED
    )

    # Customers, hosts and payments keys may not make keys; that is decided before the body.
    _, host_key = await new_user(client, role="host")
    for caller in (key, host_key, created["key"]):
        response = await client.post(
            "/integration-keys", json={"level": "nonsense"}, headers={"X-API-Key": caller}
        )
        expect_error(response, 403, RESTRICTED)

    admin = {"X-API-Key": ADMIN_KEY}
    response = await client.post("/integration-keys", json={"level": "payments"}, headers=admin)
    expect_error(response, 400, missing_arguments(["name"]))
    response = await client.post(
        "/integration-keys", json={"name": "x", "level": "root"}, headers=admin
    )
    expect_error(response, 400, invalid_arguments(["level"]))


# --- header rules ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/accounts/ZZ-00000000", None),
        ("GET", "/sessions/active", None),
        ("POST", "/integration-keys", {"name": "x", "level": "payments"}),
    ],
)
async def test_header_rules(
    client: httpx.AsyncClient, api_url: str, method: str, path: str, body: Any
) -> None:
    async with httpx.AsyncClient(base_url=api_url) as bare:
        response = await bare.request(method, path, json=body, headers={"X-API-Key": ADMIN_KEY})
        expect_error(response, 412, UPGRADE)
        old = {"X-Client-Version": "2.9.9", "X-API-Key": ADMIN_KEY}
        expect_error(await bare.request(method, path, json=body, headers=old), 412, UPGRADE)
    expect_error(await client.request(method, path, json=body), 401, UNAUTHENTICATED)
    expect_error(
        await client.request(method, path, json=body, headers={"X-API-Key": ""}),
        401,
        UNAUTHENTICATED,
    )
    unknown = {"X-API-Key": secrets.token_hex(16)}
    expect_error(await client.request(method, path, json=body, headers=unknown), 403, RESTRICTED)


async def test_registration_and_login_need_no_key_but_a_client_version(
    client: httpx.AsyncClient, api_url: str
) -> None:
    async with httpx.AsyncClient(base_url=api_url) as bare:
        expect_error(await bare.post("/accounts", json={}), 412, UPGRADE)
        expect_error(await bare.post("/sessions", json={}), 412, UPGRADE)
    response = await client.post("/sessions", json={})
    expect_error(response, 400, missing_arguments(["identification", "password"]))


# --- every error in the contract's shape ---------------------------------------------------


@pytest.mark.parametrize("path", ["/accounts", "/sessions", "/orders", "/integration-keys"])
async def test_a_body_that_is_not_json_is_named_body(client: httpx.AsyncClient, path: str) -> None:
    """Not the parser's position ("...invalid values: 13."): the argument is the body."""
    response = await client.post(
        path,
        content=b'{"username": "ada", "password": ',
        headers={"Content-Type": "application/json", "X-API-Key": ADMIN_KEY},
    )
    expect_error(response, 400, invalid_arguments(["body"], "The body must be a JSON object."))


async def test_a_body_that_is_not_an_object_is_named_body(client: httpx.AsyncClient) -> None:
    for content in (b"[]", b'"text"', b"42", b"null"):
        response = await client.post(
            "/accounts", content=content, headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 400, response.text
        assert response.json()["message"].startswith(
            "The following arguments are required, but have not been supplied"
        ) or response.json()["message"].startswith(invalid_arguments(["body"])), response.text


async def test_text_postgresql_cannot_store_is_a_400_naming_the_argument(
    client: httpx.AsyncClient,
) -> None:
    """NUL characters and lone surrogates are no text: 400 at the door, not 500 in SQL."""
    name = unique_name()
    valid = {"username": name, "password": "long enough 1", "email": f"{name}@example.com"}
    for field, raw in (("username", '"ab\\u0000cd"'), ("firstName", '"Ada\\ud800"')):
        content = json.dumps(valid)[:-1] + f', "{field}": {raw}}}'
        response = await client.post(
            "/accounts", content=content, headers={"Content-Type": "application/json"}
        )
        expect_error(response, 400, invalid_arguments([field]))
    response = await client.post(
        "/sessions",
        content=b'{"identification": "x\\u0000", "password": "y"}',
        headers={"Content-Type": "application/json"},
    )
    expect_error(response, 400, invalid_arguments(["identification"]))

    admin = {"X-API-Key": ADMIN_KEY}
    expect_error(await client.get("/accounts/AB%00", headers=admin), 404, ACCOUNT_NOT_FOUND)
    expect_error(
        await client.get("/orders/AB%00", headers=admin),
        404,
        "There is presently no resource with the given URI.",
    )
    for name in ("customer", "number"):
        response = await client.get("/orders", params={name: "A\x00"}, headers=admin)
        expect_error(response, 400, invalid_arguments([name]))


async def test_unknown_paths_and_methods_answer_in_the_contract_shape(
    client: httpx.AsyncClient,
) -> None:
    admin = {"X-API-Key": ADMIN_KEY}
    expect_error(
        await client.get("/nowhere", headers=admin),
        404,
        "There is presently no resource with the given URI.",
    )
    response = await client.put("/orders", headers=admin)
    expect_error(response, 405, "This method is not allowed on the given URI.")
    assert "Allow" in response.headers


async def test_a_payments_key_may_not_register_accounts(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/integration-keys",
        json={"name": "psp", "level": "payments"},
        headers={"X-API-Key": ADMIN_KEY},
    )
    name = unique_name()
    response = await client.post(
        "/accounts",
        json={"username": name, "password": "long enough 1", "email": f"{name}@example.com"},
        headers={"X-API-Key": created.json()["key"]},
    )
    expect_error(response, 403, RESTRICTED)
