"""examples/client_app: the guarded support agent against a real service with the demo policy.

A reviewer (another task, with a reviewer API key) approves the held refund
through the API while the agent's guarded tool waits; the ledger shows which
side effects really happened.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import secrets
import sys
from pathlib import Path

import httpx
import pytest
from helpers.net import free_port

from policyengine.demo import ServiceProcess
from policyengine.demo.runner import POLICY_DIR

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "client_app" / "support_agent.py"


def _load_app():
    spec = importlib.util.spec_from_file_location("support_agent", APP)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules["support_agent"] = mod
    spec.loader.exec_module(mod)
    return mod


async def test_support_agent_guarded_tools(tmp_path: Path) -> None:
    app = _load_app()
    tokens = {"app": "ca-app-" + secrets.token_urlsafe(20), "reviewer": "ca-rev-" + secrets.token_urlsafe(20)}
    port = free_port()
    seed = [{"token_env": "CA_APP", "tenant": "acme", "roles": ["app"], "subject": "support-agent"},
            {"token_env": "CA_REVIEWER", "tenant": "acme", "roles": ["reviewer"], "subject": "dana",
             "groups": ["refunds", "legal", "support-leads"]}]
    svc = ServiceProcess(port=port, log_path=tmp_path / "service.log", drop_prefixes=("POLICYENGINE_",), env={
        "POLICYENGINE_DATABASE_URL": f"sqlite:///{tmp_path / 'pe.db'}",
        "POLICYENGINE_POLICY_PATH": str(POLICY_DIR),
        "POLICYENGINE_SEED_KEYS": json.dumps(seed),
        "POLICYENGINE_APPROVALS_LINK_SECRET": secrets.token_urlsafe(32),
        "POLICYENGINE_APPROVALS_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "CA_APP": tokens["app"], "CA_REVIEWER": tokens["reviewer"],
    })
    await svc.start(timeout=120)
    try:
        approved: list[str] = []

        async def reviewer() -> None:
            headers = {"Authorization": f"Bearer {tokens['reviewer']}"}
            async with httpx.AsyncClient(base_url=svc.url, headers=headers, timeout=30) as c:
                while not approved:
                    pending = (await c.get("/v1/approvals", params={"state": "pending"})).json()["data"]
                    for a in pending:
                        if a["action_name"] == "refund":
                            r = await c.post(f"/v1/approvals/{a['id']}/approve", json={"reason": "receipt checked"})
                            assert r.status_code == 200, r.text
                            approved.append(a["id"])
                    await asyncio.sleep(0.2)

        tickets = app.load_tickets(APP.parent / "tickets.json")
        rev = asyncio.create_task(reviewer())
        ledger = await asyncio.wait_for(app.run(svc.url, tokens["app"], tickets, approval_timeout=60), 90)
        await asyncio.wait_for(rev, 5)
    finally:
        await svc.stop()
    # £40 ran at once, £150 ran after the reviewer approved it; nothing else had side effects
    assert sorted(r["amount"] for r in ledger.refunds) == ["150 GBP", "40 GBP"]
    assert len(approved) == 1
    assert ledger.deleted == []  # delete_account is denied: the tool never ran
    assert ledger.emails == []
