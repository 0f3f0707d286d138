"""HTTP helpers shared by the API tests: error checks, registration and login."""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from tests.conftest import ADMIN_KEY


def unique_name() -> str:
    return f"u_{secrets.token_hex(5)}"


def expect_error(response: httpx.Response, status: int, message: str) -> None:
    """The response is the contract's error: this status, the text in both fields."""
    assert response.status_code == status, response.text
    assert response.json() == {"message": message, "error": message}


async def register(
    client: httpx.AsyncClient, key: str | None = None, **fields: Any
) -> tuple[dict[str, Any], str]:
    """A new account (201); returns its representation and its password."""
    username = fields.pop("username", unique_name())
    password = fields.pop("password", f"pw-{secrets.token_hex(6)}")
    body = {"username": username, "password": password, "email": f"{username}@example.com"}
    headers = {"X-API-Key": key} if key else {}
    response = await client.post("/accounts", json=body | fields, headers=headers)
    assert response.status_code == 201, response.text
    return response.json(), password


async def login(client: httpx.AsyncClient, identification: str, password: str) -> str:
    response = await client.post(
        "/sessions", json={"identification": identification, "password": password}
    )
    assert response.status_code == 201, response.text
    return response.json()["key"]


async def new_user(client: httpx.AsyncClient, role: str | None = None) -> tuple[dict, str]:
    """An account (made by the admin key when a role is asked) and a session key for it."""
    if role is None:
        account, password = await register(client)
    else:
        account, password = await register(client, ADMIN_KEY, role=role)
    return account, await login(client, account["username"], password)


# The test gateway authorises this card (api/card_gateway.py); everything else is filler.
CARD = {
    "number": "4242424242424242",
    "cvv": "123",
    "expiryDate": "12/39",
    "name": "Ada Lovelace",
    "email": "ada@example.com",
    "phone": "+1 555 0100",
    "address1": "1 Main Street",
    "city": "Kingston",
    "district": "St Andrew",
    "country": "Jamaica",
}
