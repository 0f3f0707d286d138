"""The one place settings are read.

Every process (API, worker, migrations, `make run`, tests, benchmark) builds a `Settings`
from the environment and an optional `.env` file. Values are typed and validated at start, so
a typo in a variable fails the process with a message naming the variable instead of
surfacing as a strange error in the middle of an on-sale. `.env.example` lists every variable
with its default (a test keeps it in step with this class).
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent


DEFAULT_FEE_SCHEDULE = "50.00:0.99,100.00:1.99,150.00:2.99,200.00:3.99,*:4.99"

Port = Annotated[int, Field(ge=1, le=65535)]

# Never echoed back in an error message: they hold passwords or keys.
SECRET_FIELDS = frozenset({"database_url", "temporal_api_key", "ticketing_admin_key"})


def parse_fee_schedule(text: str) -> tuple[tuple[Decimal | None, Decimal], ...]:
    """Parse `UPTO:FEE,...,*:FEE` into ((upto, fee), ..., (None, fee)).

    Kept as text in the environment so an operator can change it without code; validated
    here so a malformed schedule stops the process at start rather than mispricing orders.
    """
    tiers: list[tuple[Decimal | None, Decimal]] = []
    for part in text.split(","):
        bound_text, _, fee_text = part.strip().partition(":")
        if not re.fullmatch(r"\d+(\.\d{1,2})?", fee_text.strip()):
            raise ValueError(f"fee {fee_text!r} is not an amount with at most two decimals")
        fee = Decimal(fee_text.strip())
        if bound_text.strip() == "*":
            tiers.append((None, fee))
            continue
        if not re.fullmatch(r"\d+(\.\d{1,2})?", bound_text.strip()):
            raise ValueError(f"tier bound {bound_text!r} is not an amount or '*'")
        tiers.append((Decimal(bound_text.strip()), fee))
    if not tiers or tiers[-1][0] is not None:
        raise ValueError("the last fee tier must be '*:FEE' (prices above every bound)")
    bounds = [bound for bound, _ in tiers[:-1]]
    if bounds != sorted(bounds) or len(set(bounds)) != len(bounds):
        raise ValueError("fee tier bounds must increase")
    return tuple(tiers)


class Settings(BaseSettings):
    """Runtime configuration; `.env.example` documents each variable and its default."""

    model_config = SettingsConfigDict(
        env_file=PROJECT_ROOT / ".env", env_file_encoding="utf-8", extra="ignore"
    )

    # Application database. Empty: `make run` starts an embedded PostgreSQL itself.
    database_url: str = ""
    database_pool_min: Annotated[int, Field(ge=1)] = 2
    database_pool_max: Annotated[int, Field(ge=1)] = 20

    # Temporal. Empty address: `make run` starts a dev server on 7233 (UI on 8233).
    temporal_address: str = ""
    temporal_namespace: str = "default"
    temporal_task_queue: str = "orders"
    temporal_api_key: str = ""  # Temporal Cloud API key; enables TLS when set
    temporal_tls: bool = False
    temporal_tls_cert: str = ""  # path to a client certificate (mTLS)
    temporal_tls_key: str = ""
    temporal_ui_port: Port = 8233

    # HTTP API.
    host: str = "127.0.0.1"
    port: Port = 8000

    # Orders.
    reservation_seconds: Annotated[int, Field(ge=1)] = 15 * 60
    settlement_grace_seconds: Annotated[int, Field(ge=0)] = 24 * 60 * 60
    max_tickets_per_section: Annotated[int, Field(ge=1)] = 20
    max_sections_per_order: Annotated[int, Field(ge=1)] = 50
    fee_schedule: str = DEFAULT_FEE_SCHEDULE

    # Sessions and keys.
    session_idle_seconds: Annotated[int, Field(ge=60)] = 24 * 60 * 60
    ticketing_admin_key: str = ""
    # Requests per minute per caller (account or integration key) in each API process;
    # beyond it 429 with Retry-After. 0 disables. Burst: the bucket size (default: a
    # minute's worth, so a quiet caller may send that many at once).
    rate_limit_per_minute: Annotated[int, Field(ge=0)] = 600
    rate_limit_burst: Annotated[int, Field(ge=1)] | None = None
    # POST /orders running at once in each API process; the rest queue briefly and then
    # meet the availability pre-check, so an on-sale's losers hear "sold out" in
    # milliseconds instead of queueing behind the winners in Temporal (api/admission.py).
    placements_in_flight: Annotated[int, Field(ge=1)] = 16

    # How long the API and the worker keep trying to reach PostgreSQL and Temporal when they
    # start, before they exit non-zero with a message naming what they could not reach.
    startup_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 10

    # The port of the PostgreSQL that `make run` starts when DATABASE_URL is empty.
    embedded_postgres_port: Annotated[int, Field(ge=1, le=65535)] = 54329

    # Where `make run` keeps its data (PostgreSQL cluster, Temporal SQLite file).
    data_dir: Path = PROJECT_ROOT / ".data"

    @field_validator("data_dir")
    @classmethod
    def _data_dir_from_project_root(cls, value: Path) -> Path:
        """A relative DATA_DIR (`.data`) means the same folder from any working directory."""
        return value if value.is_absolute() else PROJECT_ROOT / value

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgresql(cls, value: str) -> str:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("DATABASE_URL must be a postgresql://user:password@host:port/db URL")
        return value

    @field_validator("temporal_address")
    @classmethod
    def _temporal_address_has_port(cls, value: str) -> str:
        host, _, port = value.rpartition(":")
        if value and (not host or "/" in value or not port.isdigit() or not 0 < int(port) < 65536):
            raise ValueError("TEMPORAL_ADDRESS must be HOST:PORT, e.g. temporal:7233")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.database_pool_min > self.database_pool_max:
            raise ValueError(
                f"DATABASE_POOL_MIN ({self.database_pool_min}) must not exceed "
                f"DATABASE_POOL_MAX ({self.database_pool_max})"
            )
        if bool(self.temporal_tls_cert) != bool(self.temporal_tls_key):
            raise ValueError("TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY must be set together (mTLS)")
        return self

    @field_validator("fee_schedule")
    @classmethod
    def _fee_schedule_parses(cls, value: str) -> str:
        parse_fee_schedule(value)
        return value

    @field_validator("ticketing_admin_key")
    @classmethod
    def _admin_key_is_hex(cls, value: str) -> str:
        if value and not re.fullmatch(r"[0-9a-f]{32}", value):
            raise ValueError("TICKETING_ADMIN_KEY must be 32 lowercase hex characters")
        return value

    @property
    def fee_tiers(self) -> tuple[tuple[Decimal | None, Decimal], ...]:
        return parse_fee_schedule(self.fee_schedule)


class ConfigurationError(SystemExit):
    """Settings that fail validation, explained in one line that names each variable.

    A SystemExit, so any entry point that reads its settings (API, worker, migrations,
    `make run`) stops with this message on stderr and exit code 1, not a traceback.
    """


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad variable, its value (unless secret) and what is wrong."""
    problems = []
    for item in error.errors():
        field = str(item["loc"][0]) if item.get("loc") else ""
        reason = item["msg"].removeprefix("Value error, ")
        if not field:  # a rule across several variables; the reason names them
            problems.append(reason)
        elif field in SECRET_FIELDS:
            problems.append(f"{field.upper()} (value hidden): {reason}")
        else:
            problems.append(f"{field.upper()}={item.get('input')!r}: {reason}")
    return "Invalid configuration (environment or .env): " + "; ".join(problems)


def load_settings(**values: Any) -> Settings:
    """Build and validate settings, raising ConfigurationError with a clear message."""
    try:
        return Settings(**values)
    except ValidationError as error:
        raise ConfigurationError(describe_validation_error(error)) from None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()
