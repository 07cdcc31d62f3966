"""`policyengine approvals ...` against a real SQLite database."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from approvals.helpers import make_service, refund_action, refund_decision
from policyengine.cli import app
from policyengine.types import Channel


def test_list_show_outbox_redeliver_sweep(tmp_path):
    url = f"sqlite:///{tmp_path}/cli.db"

    async def seed() -> str:
        svc, db = await make_service(url)
        try:
            res = await svc.hold(action=refund_action(), decision=refund_decision(
                [Channel(kind="webhook", target="http://127.0.0.1:9/unreachable")], timeout_s=60))
            async with db.engine.begin() as conn:
                import sqlalchemy as sa
                await conn.execute(sa.text("update notification_outbox set state='dead', last_error='boom'"))
            return res.approval_id
        finally:
            await db.aclose()

    approval_id = asyncio.run(seed())
    runner = CliRunner()
    r = runner.invoke(app, ["approvals", "list", "--db", url, "--json"])
    assert r.exit_code == 0, r.output
    assert [a["id"] for a in json.loads(r.stdout)] == [approval_id]
    r = runner.invoke(app, ["approvals", "show", approval_id, "--db", url, "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["audit"][0]["kind"] == "created"
    assert runner.invoke(app, ["approvals", "show", "apr_nope", "--db", url]).exit_code == 1
    r = runner.invoke(app, ["approvals", "outbox", "--db", url, "--state", "dead"])
    assert r.exit_code == 0 and "boom" in r.stdout
    r = runner.invoke(app, ["approvals", "redeliver", "--db", url])
    assert r.exit_code == 0 and "1 deliveries queued again" in r.stdout
    r = runner.invoke(app, ["approvals", "list", "--db", url, "--state", "bogus"])
    assert r.exit_code == 2
    r = runner.invoke(app, ["approvals", "sweep", "--db", url])
    assert r.exit_code == 0 and "timed out / escalated: 0" in r.stdout
