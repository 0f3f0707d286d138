"""Who may call what: every endpoint of the app against every kind of caller.

The table below has one row per endpoint (method and path template) and one column per
kind of caller; each cell is the status that caller must get for a valid request. The row
set must equal the app's routes, so an endpoint added without a row fails
`test_every_endpoint_has_a_row`.

Each request is otherwise valid (existing resources, good bodies), so a cell's status is
decided by permission alone. Requests that change state (ending a session, cancelling or
paying an order) get a fresh session or order of their own.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from api.errors import RESTRICTED, UNAUTHENTICATED
from api.main import app
from tests.conftest import ADMIN_KEY
from tests.http_helpers import CARD, login, register, unique_name

CALLERS = (
    "none",  # no X-API-Key at all
    "unknown",  # a well-formed key nobody has
    "ended",  # the key of a session that was ended
    "owner",  # the customer who owns the account / order
    "other",  # another customer
    "host",  # a host account (the host of the event)
    "support",  # a support account (staff)
    "administrator",  # an administrator account (staff)
    "admin_key",  # an administrator integration key
    "payments",  # a payments integration key
)


def row(default: int | None = None, **cells: int) -> dict[str, int]:
    """A row: `none` 401 and `unknown`/`ended` 403 unless said otherwise; every other
    caller `default` unless named."""
    base = {"none": 401, "unknown": 403, "ended": 403}
    others = {caller: default for caller in CALLERS if caller not in base}
    result = base | others | cells
    assert set(result) == set(CALLERS) and None not in result.values(), cells
    return result  # type: ignore[return-value]


def everyone(status: int) -> dict[str, int]:
    return dict.fromkeys(CALLERS, status)


OWNER_OR_STAFF = {"owner": 200, "support": 200, "administrator": 200, "admin_key": 200}
STAFF_ACTS = {"support": 201, "administrator": 201, "admin_key": 201}

MATRIX: dict[tuple[str, str], dict[str, int]] = {
    # Open paths need neither header; a key sent there is ignored.
    ("GET", "/healthz"): everyone(200),
    ("GET", "/readyz"): everyone(200),
    ("GET", "/openapi.json"): everyone(200),
    ("GET", "/docs"): everyone(200),
    ("GET", "/docs/oauth2-redirect"): everyone(200),
    ("GET", "/redoc"): everyone(200),
    # Logging in needs no key; registering neither, but a key that is sent must be valid.
    ("POST", "/sessions"): everyone(201),
    ("POST", "/accounts"): row(201, none=201, payments=403),
    # Sessions: only session keys have one.
    ("GET", "/sessions/active"): row(200, admin_key=403, payments=403),
    ("DELETE", "/sessions/active"): row(200, admin_key=403, payments=403),
    # An account: itself and staff.
    ("GET", "/accounts/{number}"): row(403, **OWNER_OR_STAFF),
    ("GET", "/accounts/{number}/orders"): row(403, **OWNER_OR_STAFF),
    ("GET", "/accounts/{number}/tickets"): row(403, **OWNER_OR_STAFF),
    # Integration keys: administrators.
    ("POST", "/integration-keys"): row(403, administrator=201, admin_key=201),
    # Events: hosts and administrators create; every caller but a payments key reads.
    ("POST", "/events"): row(403, host=201, administrator=201, admin_key=201),
    ("GET", "/events/{event}"): row(200, payments=403),
    ("POST", "/events/{event}/sections"): row(403, host=201, administrator=201, admin_key=201),
    ("GET", "/events/{event}/sections/{section}"): row(200, payments=403),
    # Orders: the customer and staff act; payments keys read and settle.
    ("POST", "/orders"): row(403, owner=201, **STAFF_ACTS),
    ("GET", "/orders"): row(403, **OWNER_OR_STAFF, payments=200),
    ("GET", "/orders/{number}"): row(403, **OWNER_OR_STAFF, payments=200),
    ("DELETE", "/orders/{number}"): row(403, **OWNER_OR_STAFF),
    ("POST", "/orders/{number}/payments"): row(403, owner=201, **STAFF_ACTS),
    ("GET", "/orders/{number}/payments"): row(403, **OWNER_OR_STAFF, payments=200),
    ("POST", "/orders/{number}/settlements"): row(
        403, administrator=201, admin_key=201, payments=201
    ),
}


def _routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI's included routers
        if included is not None:
            yield from _routes(included.routes, prefix + route.include_context.prefix)
            continue
        for method in (getattr(route, "methods", None) or set()) - {"HEAD"}:
            yield method, prefix + route.path


def app_endpoints() -> set[tuple[str, str]]:
    """Every (method, path) the app serves: its routes, and every operation of its
    OpenAPI document (in case FastAPI nests routes somewhere the walk does not see)."""
    endpoints = set(_routes(app.routes))
    for path, operations in app.openapi()["paths"].items():
        endpoints.update((method.upper(), path) for method in operations)
    return endpoints


def test_every_endpoint_has_a_row() -> None:
    endpoints = app_endpoints()
    assert endpoints - MATRIX.keys() == set(), "endpoints without a row in MATRIX"
    assert MATRIX.keys() - endpoints == set(), "rows for endpoints that do not exist"


# --- the world the requests act on --------------------------------------------------------


@dataclass
class World:
    """Accounts of every kind with their passwords, an event of `host`, a section on
    sale, and a Placed order of `owner`."""

    http: httpx.AsyncClient
    accounts: dict[str, tuple[dict[str, Any], str]]  # caller -> (account, password)
    keys: dict[str, str | None]  # caller -> the X-API-Key it sends
    event: str
    section: str
    order: dict[str, Any]

    @property
    def owner(self) -> dict[str, Any]:
        return self.accounts["owner"][0]

    async def fresh_key(self, caller: str) -> str | None:
        """A key of its own for a request that ends its session."""
        if caller not in self.accounts:
            return self.keys[caller]
        account, password = self.accounts[caller]
        return await login(self.http, account["username"], password)

    async def fresh_order(self) -> dict[str, Any]:
        """A Placed order of `owner` (placed by the owner itself), for one ticket of a
        section of its own: the customer's cap on live holds per section stays far."""
        section = await self.http.post(
            f"{self.event}/sections",
            json=_section_body(),
            headers={"X-API-Key": self.keys["host"]},
        )
        assert section.status_code == 201, section.text
        response = await self.http.post(
            "/orders",
            json={"items": {section.json()["self"]: 1}},
            headers={"X-API-Key": self.keys["owner"]},
        )
        assert response.status_code == 201, response.text
        return response.json()


@pytest.fixture(scope="module")
async def world(api_url: str, worker_process: Any) -> World:
    http = httpx.AsyncClient(base_url=api_url, headers={"X-Client-Version": "3.0.0"}, timeout=30)
    accounts: dict[str, tuple[dict[str, Any], str]] = {}
    keys: dict[str, str | None] = {"none": None, "unknown": secrets.token_hex(16)}
    for caller, role in (
        ("owner", None),
        ("other", None),
        ("host", "host"),
        ("support", "support"),
        ("administrator", "administrator"),
    ):
        account, password = await (
            register(http) if role is None else register(http, ADMIN_KEY, role=role)
        )
        accounts[caller] = (account, password)
        keys[caller] = await login(http, account["username"], password)
    keys["admin_key"] = ADMIN_KEY
    created = await http.post(
        "/integration-keys",
        json={"name": "permission matrix", "level": "payments"},
        headers={"X-API-Key": ADMIN_KEY},
    )
    assert created.status_code == 201, created.text
    keys["payments"] = created.json()["key"]
    owner, password = accounts["owner"]
    ended = await login(http, owner["username"], password)
    assert (await http.delete("/sessions/active", headers={"X-API-Key": ended})).status_code == 200
    keys["ended"] = ended

    host = {"X-API-Key": keys["host"]}
    event = await http.post("/events", json=_event_body(), headers=host)
    assert event.status_code == 201, event.text
    section = await http.post(
        f"{event.json()['self']}/sections", json=_section_body(), headers=host
    )
    assert section.status_code == 201, section.text
    world = World(
        http=http,
        accounts=accounts,
        keys=keys,
        event=event.json()["self"],
        section=section.json()["self"],
        order={},
    )
    world.order = await world.fresh_order()
    return world


def _event_body() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "title": f"Matrix {unique_name()}",
        "start": (now + timedelta(days=30)).isoformat(),
        "end": (now + timedelta(days=30, hours=3)).isoformat(),
    }


def _section_body() -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "name": "Stands",
        "description": "Seats",
        "basePrice": 25.0,
        "salesStart": (now - timedelta(days=1)).isoformat(),
        "salesEnd": (now + timedelta(days=20)).isoformat(),
        "capacity": 10_000,
    }


# --- one valid request per endpoint -------------------------------------------------------

Send = Callable[[World, str], Awaitable[httpx.Response]]


def _headers(key: str | None) -> dict[str, str]:
    return {"X-API-Key": key} if key is not None else {}


async def _request(
    world: World, key: str | None, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    return await world.http.request(method, path, headers=_headers(key), **kwargs)


def simple(method: str, path: Callable[[World], str], **kwargs: Any) -> Send:
    async def send(world: World, caller: str) -> httpx.Response:
        return await _request(world, world.keys[caller], method, path(world), **kwargs)

    return send


async def _register(world: World, caller: str) -> httpx.Response:
    name = unique_name()
    body = {"username": name, "password": "long enough 1", "email": f"{name}@example.com"}
    return await _request(world, world.keys[caller], "POST", "/accounts", json=body)


async def _login(world: World, caller: str) -> httpx.Response:
    owner, password = world.accounts["owner"]
    body = {"identification": owner["username"], "password": password}
    return await _request(world, world.keys[caller], "POST", "/sessions", json=body)


async def _end_session(world: World, caller: str) -> httpx.Response:
    return await _request(world, await world.fresh_key(caller), "DELETE", "/sessions/active")


async def _new_key(world: World, caller: str) -> httpx.Response:
    body = {"name": "matrix", "level": "payments"}
    return await _request(world, world.keys[caller], "POST", "/integration-keys", json=body)


async def _new_event(world: World, caller: str) -> httpx.Response:
    return await _request(world, world.keys[caller], "POST", "/events", json=_event_body())


async def _new_section(world: World, caller: str) -> httpx.Response:
    path = f"{world.event}/sections"
    return await _request(world, world.keys[caller], "POST", path, json=_section_body())


async def _place(world: World, caller: str) -> httpx.Response:
    body = {"customer": world.owner["number"], "items": {world.section: 1}}
    return await _request(world, world.keys[caller], "POST", "/orders", json=body)


async def _list_orders(world: World, caller: str) -> httpx.Response:
    """Filtered on the owner, so only callers who may see the owner's orders get 200."""
    params = {"customer": world.owner["number"]}
    return await _request(world, world.keys[caller], "GET", "/orders", params=params)


async def _cancel(world: World, caller: str) -> httpx.Response:
    order = await world.fresh_order()
    return await _request(world, world.keys[caller], "DELETE", order["self"])


async def _pay(world: World, caller: str) -> httpx.Response:
    order = await world.fresh_order()
    return await _request(world, world.keys[caller], "POST", f"{order['self']}/payments", json=CARD)


async def _settle(world: World, caller: str) -> httpx.Response:
    order = await world.fresh_order()
    body = {"reference": f"matrix-{secrets.token_hex(4)}", "amount": order["total"]}
    return await _request(
        world, world.keys[caller], "POST", f"{order['self']}/settlements", json=body
    )


SENDERS: dict[tuple[str, str], Send] = {
    ("GET", "/healthz"): simple("GET", lambda w: "/healthz"),
    ("GET", "/readyz"): simple("GET", lambda w: "/readyz"),
    ("GET", "/openapi.json"): simple("GET", lambda w: "/openapi.json"),
    ("GET", "/docs"): simple("GET", lambda w: "/docs"),
    ("GET", "/docs/oauth2-redirect"): simple("GET", lambda w: "/docs/oauth2-redirect"),
    ("GET", "/redoc"): simple("GET", lambda w: "/redoc"),
    ("POST", "/sessions"): _login,
    ("POST", "/accounts"): _register,
    ("GET", "/sessions/active"): simple("GET", lambda w: "/sessions/active"),
    ("DELETE", "/sessions/active"): _end_session,
    ("GET", "/accounts/{number}"): simple("GET", lambda w: w.owner["self"]),
    ("GET", "/accounts/{number}/orders"): simple("GET", lambda w: f"{w.owner['self']}/orders"),
    ("GET", "/accounts/{number}/tickets"): simple("GET", lambda w: f"{w.owner['self']}/tickets"),
    ("POST", "/integration-keys"): _new_key,
    ("POST", "/events"): _new_event,
    ("GET", "/events/{event}"): simple("GET", lambda w: w.event),
    ("POST", "/events/{event}/sections"): _new_section,
    ("GET", "/events/{event}/sections/{section}"): simple("GET", lambda w: w.section),
    ("POST", "/orders"): _place,
    ("GET", "/orders"): _list_orders,
    ("GET", "/orders/{number}"): simple("GET", lambda w: w.order["self"]),
    ("DELETE", "/orders/{number}"): _cancel,
    ("POST", "/orders/{number}/payments"): _pay,
    ("GET", "/orders/{number}/payments"): simple("GET", lambda w: f"{w.order['self']}/payments"),
    ("POST", "/orders/{number}/settlements"): _settle,
}


def test_every_row_has_a_request() -> None:
    assert SENDERS.keys() == MATRIX.keys()


@pytest.mark.parametrize(
    ("method", "path", "caller", "expected"),
    [
        pytest.param(method, path, caller, status, id=f"{method} {path} as {caller}")
        for (method, path), cells in MATRIX.items()
        for caller, status in cells.items()
    ],
)
async def test_permission(world: World, method: str, path: str, caller: str, expected: int) -> None:
    response = await SENDERS[(method, path)](world, caller)
    assert response.status_code == expected, response.text
    if expected == 401:
        assert response.json() == {"message": UNAUTHENTICATED, "error": UNAUTHENTICATED}
    elif expected == 403:
        assert response.json() == {"message": RESTRICTED, "error": RESTRICTED}
