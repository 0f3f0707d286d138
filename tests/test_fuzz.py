"""Schema-driven fuzzing of the live API with schemathesis: /openapi.json is the oracle.

Schemathesis reads the document the running API serves and generates requests for every
operation, both fitting the schema (positive) and breaking it (negative: wrong types,
missing fields, bodies that are not objects, ...). Each request goes to the real stack with
`X-Client-Version` and one of several callers (a customer, an administrator, a payments
key, or no key at all), sometimes aimed at resources that exist. Every response must be:

- no 5xx;
- a status the operation documents, with the documented content type and headers, and a
  body that matches the documented schema (schemathesis' conformance checks);
- for every error, the contract's body: `{"message": TEXT, "error": TEXT}`, same text.

Failures of all operations are collected and reported together, each with a curl line to
reproduce it.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.errors import UPGRADE
from api.main import app
from tests.conftest import ADMIN_KEY, CLIENT_VERSION
from tests.http_helpers import login, register

EXAMPLES_PER_MODE = 40  # per operation and mode: about 21 operations x 2 modes x 40
MINIMUM_REQUESTS = 300
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
HYPOTHESIS = settings(
    max_examples=EXAMPLES_PER_MODE,
    deadline=None,
    database=None,
    derandomize=False,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the curl line is enough
    suppress_health_check=list(HealthCheck),
)


async def _callers(http: httpx.AsyncClient) -> tuple[dict[str, str | None], dict[str, str]]:
    """Keys of several kinds (each its own rate-limit bucket), and real path parameters."""
    customer, password = await register(http)
    admin, admin_password = await register(http, ADMIN_KEY, role="administrator")
    created = await http.post(
        "/integration-keys",
        json={"name": "fuzz", "level": "payments"},
        headers={"X-API-Key": ADMIN_KEY},
    )
    assert created.status_code == 201, created.text
    keys: dict[str, str | None] = {
        "customer": await login(http, customer["username"], password),
        "administrator": await login(http, admin["username"], admin_password),
        "payments": created.json()["key"],
        "none": None,
        "unknown": secrets.token_hex(16),
    }
    # An event, a section and an order that exist, so some requests get past the 404s.
    admin_headers = {"X-API-Key": keys["administrator"]}
    event = await http.post(
        "/events",
        json={"title": "Fuzz", "start": "2030-01-01T20:00:00+00:00", "end": "2030-01-01T23:00"},
        headers=admin_headers,
    )
    assert event.status_code == 201, event.text
    section = await http.post(
        f"{event.json()['self']}/sections",
        json={
            "name": "Fuzz stands",
            "basePrice": 10,
            "salesStart": "2020-01-01T00:00:00+00:00",
            "salesEnd": "2029-12-31T00:00:00+00:00",
            "capacity": 100_000,
        },
        headers=admin_headers,
    )
    assert section.status_code == 201, section.text
    order = await http.post(
        "/orders",
        json={"items": {section.json()["self"]: 1}},
        headers={"X-API-Key": keys["customer"]},
    )
    assert order.status_code == 201, order.text
    event_id = event.json()["self"].rsplit("/", 1)[1]
    path_parameters = {
        "number": customer["number"],  # an account number where the path has an account
        "order": order.json()["number"],
        "event": event_id,
        "section": section.json()["self"].rsplit("/", 1)[1],
        "section_uri": section.json()["self"],
    }
    return keys, path_parameters


def _real_parameters(path: str, known: dict[str, str]) -> dict[str, str]:
    """Path parameters naming things that exist, for operations on `path`."""
    parameters: dict[str, str] = {}
    if "{event}" in path:
        parameters["event"] = known["event"]
    if "{section}" in path:
        parameters["section"] = known["section"]
    if path.startswith("/accounts/{number}"):
        parameters["number"] = known["number"]
    elif path.startswith("/orders/{number}"):
        parameters["number"] = known["order"]
    return parameters


def _real_bodies(
    operation: Any, fixed: dict[str, str], real: dict[str, str], known: dict[str, str]
) -> list[Any]:
    """Bodies naming things that exist, which the schema alone cannot produce: orders for
    a real section (any quantity, sometimes for another customer) and a real card."""
    label = f"{operation.method.upper()} {operation.path}"
    if label == "POST /orders":
        return [
            st.tuples(st.integers(-1, 25), st.sampled_from([None, known["number"], "ZZ-00000000"]))
            .map(
                lambda drawn: (
                    {"items": {known["section_uri"]: drawn[0]}}
                    | ({"customer": drawn[1]} if drawn[1] else {})
                )
            )
            .flatmap(lambda body: operation.as_strategy(headers=fixed, body=body))
        ]
    if label == "POST /orders/{number}/payments":
        card = {
            "number": "4242424242424242",
            "cvv": "123",
            "expiryDate": "12/39",
            "name": "Fuzz",
            "email": "fuzz@example.com",
            "phone": "+1 555 0100",
            "address1": "1 Main Street",
            "city": "Kingston",
            "district": "St Andrew",
            "country": "Jamaica",
        }
        return [operation.as_strategy(headers=fixed, path_parameters=real, body=card)]
    return []


def _contract_error_body(response: requests.Response) -> str | None:
    """Why an error response is not the contract's error body (None when it is)."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} with a body that is not JSON: {response.text[:200]!r}"
    if (
        not isinstance(body, dict)
        or set(body) != {"message", "error"}
        or body["message"] != body["error"]
    ):
        return f"{response.status_code} with a body that is not the contract's: {body!r}"
    return None


@pytest.fixture(scope="module")
async def fuzz_setup(api_url: str) -> tuple[Any, dict[str, str | None], dict[str, str]]:
    async with httpx.AsyncClient(
        base_url=api_url, headers={"X-Client-Version": CLIENT_VERSION}, timeout=30
    ) as http:
        keys, known = await _callers(http)
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    return schema, keys, known


def test_the_openapi_document_is_valid_and_the_docs_render(
    api_url: str, fuzz_setup: tuple[Any, Any, Any]
) -> None:
    schema, _, _ = fuzz_setup
    schema.validate()  # against the OpenAPI 3.1 meta-schema; raises if invalid
    document = requests.get(f"{api_url}/openapi.json", timeout=10).json()
    assert document["info"]["version"] == "3.0.0"
    docs = requests.get(f"{api_url}/docs", timeout=10)
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text and "/openapi.json" in docs.text


# Mostly callers with valid keys, so requests get past authentication to the real checks.
OPEN = {"/healthz", "/readyz"}  # in the document; need neither header


def test_the_openapi_document_describes_headers_statuses_and_bodies() -> None:
    """What the fuzzing cannot see: every operation documents the headers it needs, its
    errors with the contract's body, and examples of what to send."""
    document = app.openapi()
    assert document["components"]["securitySchemes"]["SessionKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": document["components"]["securitySchemes"]["SessionKey"]["description"],
    }
    assert "HTTPValidationError" not in document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            label = f"{method.upper()} {path}"
            responses = operation["responses"]
            headers = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "header"}
            if path in OPEN:
                assert "X-Client-Version" not in headers and "412" not in responses, label
                continue
            assert headers["X-Client-Version"]["required"] is True, label
            assert "412" in responses, label
            if label == "POST /sessions":
                assert operation["security"] == [], label
            elif label == "POST /accounts":
                assert operation["security"] == [{"SessionKey": []}, {}], label
            else:
                assert operation["security"] == [{"SessionKey": []}], label
                assert {"401", "403", "429"} <= responses.keys(), label
            for status, response in responses.items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (label, status)
                    assert status != "422" or "Idempotency-Key" in headers, label
                if status in ("429", "503"):
                    assert "Retry-After" in response["headers"], (label, status)
                if status == "201" and not label.startswith("POST /orders/{number}/"):
                    assert "Location" in response.get("headers", {}), label
            if "requestBody" in operation:
                (media,) = operation["requestBody"]["content"].values()
                schema = media["schema"]
                if "$ref" in schema:
                    schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
                assert schema.get("examples"), f"{label}: no example body"
    for label in ("POST /orders", "POST /orders/{number}/payments"):
        method, path = label.split()
        parameters = document["paths"][path][method.lower()]["parameters"]
        assert any(p["name"] == "Idempotency-Key" for p in parameters), label


CALLERS = ["customer"] * 3 + ["administrator"] * 3 + ["payments", "none", "unknown"]


@dataclass
class Tally:
    sent: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    by_operation: dict[str, Counter[int]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    api_url: str,
    session: requests.Session,
    keys: dict[str, str | None],
    known: dict[str, str],
    tally: Tally,
) -> None:
    """Generated requests for one operation in one mode; a failure is recorded, not raised."""
    label = f"{operation.method.upper()} {operation.path}"
    fixed = {"X-Client-Version": CLIENT_VERSION}
    strategies = [operation.as_strategy(mode, headers=fixed)]
    real = _real_parameters(operation.path, known)
    if real:
        strategies.append(operation.as_strategy(mode, headers=fixed, path_parameters=real))
    if mode is GenerationMode.POSITIVE:
        strategies.extend(_real_bodies(operation, fixed, real, known))

    @HYPOTHESIS
    @given(case=st.one_of(strategies), caller=st.sampled_from(CALLERS))
    def run(case: Any, caller: str) -> None:
        key = keys[caller]
        if label == "DELETE /sessions/active" and caller in ("customer", "administrator"):
            key = secrets.token_hex(16)  # never end the sessions the fuzzing relies on
        headers = {"X-Client-Version": CLIENT_VERSION}
        if key is not None:
            headers["X-API-Key"] = key
        response = case.call(base_url=api_url, session=session, headers=headers)
        tally.sent[label] += 1
        tally.statuses[response.status_code] += 1
        tally.by_operation.setdefault(label, Counter())[response.status_code] += 1
        case.validate_response(response, checks=CHECKS, headers=headers)
        problem = _contract_error_body(response)
        assert problem is None, f"{problem}\n{case.as_curl_command(headers=headers)}"

    try:
        run()
    except Unsatisfiable:
        pass  # nothing to break in an operation without parameters or body (negative mode)
    except (Exception, FailureGroup) as error:  # FailureGroup is a BaseExceptionGroup
        tally.failures.append(f"{label} ({mode.value}): {str(error)[:3000]}")


def _without_client_version(
    operation: Any, api_url: str, session: requests.Session, known: dict[str, str], tally: Tally
) -> None:
    """Without `X-Client-Version`, or with too old a one: 412 wherever it is required."""
    path = operation.path.format(**_real_parameters(operation.path, known))
    for version in (None, "2.9.9"):
        headers = {"X-API-Key": ADMIN_KEY}
        if version is not None:
            headers["X-Client-Version"] = version
        response = session.request(operation.method.upper(), f"{api_url}{path}", headers=headers)
        tally.sent["without a current X-Client-Version"] += 1
        tally.statuses[response.status_code] += 1
        if response.status_code != 412 or _contract_error_body(response) is not None:
            tally.failures.append(
                f"{operation.method.upper()} {path} with X-Client-Version {version}: "
                f"{response.status_code} {response.text[:200]}"
            )
        elif response.json()["message"] != UPGRADE:
            tally.failures.append(f"{operation.method.upper()} {path}: {response.text[:200]}")


def test_fuzz_the_live_api(api_url: str, fuzz_setup: tuple[Any, Any, Any]) -> None:
    schema, keys, known = fuzz_setup
    session = requests.Session()
    tally = Tally()
    started = time.monotonic()

    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz_operation(operation, mode, api_url, session, keys, known, tally)
        if "X-Client-Version" in str(operation.definition.raw.get("parameters", [])):
            _without_client_version(operation, api_url, session, known, tally)

    total = sum(tally.sent.values())
    elapsed = time.monotonic() - started
    summary = (
        f"{total} requests in {elapsed:.0f} s; statuses {dict(sorted(tally.statuses.items()))}"
    )
    print(summary)
    for label, statuses in tally.by_operation.items():
        print(f"  {label}: {dict(sorted(statuses.items()))}")
    assert not tally.failures, summary + "\n\n" + "\n\n".join(tally.failures)
    assert total >= MINIMUM_REQUESTS, summary
    assert tally.statuses[200] + tally.statuses[201] > 0 and tally.statuses[400] > 0, summary
