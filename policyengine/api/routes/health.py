"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
import time

import sqlalchemy as sa
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from policyengine.api.errors import json_response
from policyengine.gateway.readiness import warmup_check

log = logging.getLogger("policyengine.api")

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz", summary="Readiness: policy loaded, database reachable, decision log running, the "
                              "models and classifiers the policy needs loaded")
async def readyz(request: Request) -> Response:
    s = request.app.state.runtime
    checks: dict[str, str] = {}
    checks["policy"] = f"ok {s.policies.current.hash[:12]}" if s.policies.loaded else "not loaded"
    try:
        async with s.db.engine.connect() as conn:
            await asyncio.wait_for(conn.execute(sa.text("SELECT 1")), 2.0)
        checks["database"] = "ok"
    except Exception as exc:  # the detail goes to the log: /readyz answers anyone
        log.warning("readiness: the database is not reachable: %s: %s", type(exc).__name__, exc)
        checks["database"] = "error: unreachable"
    checks["decision_log"] = "ok" if s.log.running else "not running"
    checks["signals"] = warmup_check(s)  # the embedding model and classifiers the policy needs
    ok = all(v.startswith("ok") for v in checks.values())
    return json_response({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    s = request.app.state.runtime
    cooldowns = getattr(s.state, "cooldowns", None)
    if cooldowns is not None:
        try:
            now = time.time()
            s.metrics.cooldowns_open.set(sum(1 for c in await cooldowns() if c.until > now))
        except Exception as exc:  # shared state unreachable: serve the other metrics, say why
            log.warning("metrics: could not read cooldowns from the state store: %s", exc)
    return Response(generate_latest(s.metrics.registry), media_type=CONTENT_TYPE_LATEST)
