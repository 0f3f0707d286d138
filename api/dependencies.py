"""Long-lived clients made once in the app's lifespan, handed to routes as dependencies."""

from __future__ import annotations

from typing import Annotated

import asyncpg
from fastapi import Depends, Request

from config import Settings
from workflows.client import OrderWorkflows


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_database(request: Request) -> asyncpg.Pool:
    return request.app.state.pool


def get_order_workflows(request: Request) -> OrderWorkflows:
    return request.app.state.order_workflows


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
Database = Annotated[asyncpg.Pool, Depends(get_database)]
OrderWorkflowsDep = Annotated[OrderWorkflows, Depends(get_order_workflows)]
