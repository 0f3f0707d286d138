"""Idempotency-Key on POST /orders and POST /orders/{n}/payments, over HTTP."""

from __future__ import annotations

import asyncio
import secrets

from tests.http_helpers import CARD, new_user
from tests.test_orders_http import counts, customer, new_section, place

__all__ = ["customer"]  # the fixture, shared with the order tests


def keyed(headers: dict[str, str]) -> dict[str, str]:
    return headers | {"Idempotency-Key": secrets.token_hex(8)}


async def test_same_key_and_body_replay_the_same_order_without_a_second_hold(client, customer):
    _, headers = customer
    stands = await new_section(client)
    headers = keyed(headers)

    first = await place(client, headers, {stands: 2})
    second = await place(client, headers, {stands: 2})

    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers.get("Idempotent-Replayed") == "true"
    assert await counts(client, stands) == {"sold": 0, "reserved": 2, "remaining": 18}


async def test_same_key_with_another_body_is_a_422(client, customer):
    _, headers = customer
    stands = await new_section(client)
    headers = keyed(headers)
    assert (await place(client, headers, {stands: 1})).status_code == 201

    other = await place(client, headers, {stands: 2})

    assert other.status_code == 422
    assert other.json()["message"] == other.json()["error"]
    assert await counts(client, stands) == {"sold": 0, "reserved": 1, "remaining": 19}


async def test_keys_belong_to_their_caller(client, customer):
    _, headers = customer
    _, other_key = await new_user(client)
    stands = await new_section(client)
    key = {"Idempotency-Key": "shared-key"}

    mine = await place(client, headers | key, {stands: 1})
    theirs = await place(client, {"X-API-Key": other_key} | key, {stands: 1})

    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["number"] != theirs.json()["number"]


async def test_ten_simultaneous_requests_with_one_key_make_one_order(client, customer):
    _, headers = customer
    stands = await new_section(client)
    headers = keyed(headers)

    answers = await asyncio.gather(*(place(client, headers, {stands: 3}) for _ in range(10)))

    numbers = {a.json()["number"] for a in answers if a.status_code == 201}
    assert len(numbers) == 1, [a.status_code for a in answers]
    assert all(a.status_code in (201, 409) for a in answers)
    assert await counts(client, stands) == {"sold": 0, "reserved": 3, "remaining": 17}


async def test_a_replayed_payment_charges_once(client, customer):
    _, headers = customer
    stands = await new_section(client)
    order = (await place(client, headers, {stands: 1})).json()
    headers = keyed(headers)

    first = await client.post(f"{order['self']}/payments", headers=headers, json=CARD)
    second = await client.post(f"{order['self']}/payments", headers=headers, json=CARD)

    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    payments = (await client.get(f"{order['self']}/payments", headers=headers)).json()
    assert [p["outcome"] for p in payments] == ["Authorised"]


async def test_keys_are_kept_a_day_and_then_forgotten(database_url):
    import asyncpg

    from db import idempotency

    conn = await asyncpg.connect(database_url)
    try:
        for key, age_hours in (("old-key", 49), ("day-old-key", 25)):
            await conn.execute(
                "INSERT INTO idempotency_keys (caller, key, fingerprint, token, state,"
                " created_at) VALUES ('purge-test', $1, '\\x00', 'T', 'done',"
                " now() - make_interval(hours => $2))",
                key,
                age_hours,
            )

        await idempotency.purge_expired(conn)

        kept = await conn.fetch("SELECT key FROM idempotency_keys WHERE caller = 'purge-test'")
        assert [row["key"] for row in kept] == ["day-old-key"]
    finally:
        await conn.close()
