"""Request bodies of the order endpoints, and their validation.

`POST /orders` is validated by hand rather than by pydantic so the checks run in the
contract's order (who may order for whom before the items) and every message names the
offending argument in the contract's words without echoing what was sent.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from api.errors import bad_request, invalid_arguments, missing_arguments
from domain import ACCOUNT_NUMBER, OrderLine, section_uri

# Spellings of a section URI we recognise; any two that name the same section are a
# duplicate. Leading zeros, a trailing slash or the /v3 prefix do not make a new section.
_SECTION_URI_SPELLING = re.compile(
    r"(?:/v3)?/events/0*([1-9][0-9]{0,17})/sections/0*([1-9][0-9]{0,17})/?"
)


class OrderRequest(BaseModel):
    """Body of `POST /orders` (documentation; validated by `parse_customer` and
    `parse_items`)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"items": {"/events/16993717817996/sections/16993717900001": 2}},
                {
                    "customer": "MO-6A39EE8D",
                    "items": {
                        "/events/16993717817996/sections/16993717900001": 2,
                        "/events/16993717817996/sections/16993717900002": 1,
                    },
                },
            ]
        }
    )

    customer: str | None = Field(
        default=None,
        description="Account number to order for; defaults to the caller's own account.",
        examples=["MO-6A39EE8D"],
    )
    items: dict[str, int] = Field(
        description="Section URI → number of tickets (a JSON integer, 1 to the per-order cap).",
        examples=[{"/events/16993717817996/sections/16993717900001": 2}],
    )


def parse_customer(raw: Any) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not ACCOUNT_NUMBER.fullmatch(raw):
        raise bad_request(invalid_arguments(["customer"], "It must be an account number."))
    return raw


def parse_items(raw: Any, max_per_section: int, max_sections: int) -> list[OrderLine]:
    if raw is None:
        raise bad_request(missing_arguments(["items"]))
    if not isinstance(raw, dict) or not raw:
        raise bad_request(
            invalid_arguments(["items"], "It must map at least one section URI to a quantity.")
        )
    if len(raw) > max_sections:
        raise bad_request(
            invalid_arguments(["items"], f"An order may include at most {max_sections} sections.")
        )
    lines: dict[int, OrderLine] = {}
    for key, quantity in raw.items():
        match = _SECTION_URI_SPELLING.fullmatch(key)
        if match is None:
            raise bad_request(
                invalid_arguments(
                    ["items"],
                    "Every key must be a section URI /events/{event}/sections/{section}.",
                )
            )
        event_id, section_id = int(match[1]), int(match[2])
        uri = section_uri(event_id, section_id)
        if section_id in lines:
            raise bad_request(
                invalid_arguments(
                    ["items"],
                    f"Section {uri} is listed more than once.",
                )
            )
        # bool is an int in Python; JSON true is not a quantity.
        if type(quantity) is not int or not 1 <= quantity <= max_per_section:
            raise bad_request(
                invalid_arguments(
                    ["items"],
                    f"The quantity for section {uri} must be a whole number "
                    f"from 1 to {max_per_section}.",
                )
            )
        lines[section_id] = OrderLine(event_id=event_id, section_id=section_id, quantity=quantity)
    return list(lines.values())
