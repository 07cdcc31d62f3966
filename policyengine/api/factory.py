"""Uvicorn factory: `policyengine serve` passes the resolved settings through the environment
(so every worker process builds the same app)."""

from __future__ import annotations

import os

from fastapi import FastAPI

from policyengine.api.app import create_app
from policyengine.settings import Settings


def app_from_env() -> FastAPI:
    raw = os.environ.get("POLICYENGINE_SETTINGS_JSON")
    settings = Settings.model_validate_json(raw) if raw else Settings()
    return create_app(settings)
