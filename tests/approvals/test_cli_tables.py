"""CLI tables never cut ids: not at 80 columns (COLUMNS=80), not when piped (wide console);
every table command has --json."""

from __future__ import annotations

import asyncio
import json

from typer.testing import CliRunner

from approvals.helpers import make_service, refund_action, refund_decision
from policyengine.cli import app
from policyengine.types import Channel


def _seed(url: str) -> str:
    async def seed() -> str:
        svc, db = await make_service(url)
        try:
            res = await svc.hold(action=refund_action(), decision=refund_decision(
                [Channel(kind="webhook", target="http://127.0.0.1:9/a-rather-long-unreachable-webhook-path")],
                timeout_s=60), decision_id="0f6b3c7e-2d4a-4c1e-9b8f-5a6d7e8f9a0b")
            return res.approval_id
        finally:
            await db.aclose()

    return asyncio.run(seed())


def test_ids_are_whole_in_tables_and_every_table_has_json(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/cli.db"
    approval_id = _seed(url)
    runner = CliRunner()
    r = runner.invoke(app, ["keys", "create", "--tenant", "acme-corporation-emea", "--role", "reviewer",
                            "--subject", "rita.reviewer@acme-corporation.example", "--group", "refunds", "--db", url])
    key_id = "_".join(r.stdout.strip().splitlines()[-1].split("_")[1:3])
    for columns in ("80", None):  # a narrow terminal, and output piped (no terminal: 200 columns)
        if columns:
            monkeypatch.setenv("COLUMNS", columns)
        else:
            monkeypatch.delenv("COLUMNS", raising=False)
        for cmd, ids in ((["approvals", "list"], [approval_id, "0f6b3c7e-2d4a-4c1e-9b8f-5a6d7e8f9a0b"]),
                         (["approvals", "outbox"], [approval_id]),
                         (["approvals", "show", approval_id], [approval_id]),
                         (["keys", "list"], [key_id])):
            r = runner.invoke(app, [*cmd, "--db", url])
            assert r.exit_code == 0, r.output
            for i in ids:
                assert i in r.stdout, f"{' '.join(cmd)} cut {i} (COLUMNS={columns}):\n{r.stdout}"
    for cmd in (["approvals", "list"], ["approvals", "outbox"], ["approvals", "show", approval_id], ["keys", "list"]):
        r = runner.invoke(app, [*cmd, "--db", url, "--json"])
        assert r.exit_code == 0, r.output
        assert approval_id in r.stdout or key_id in r.stdout
        json.loads(r.stdout)
    outbox = json.loads(runner.invoke(app, ["approvals", "outbox", "--db", url, "--json"]).stdout)
    assert outbox[0]["target"].endswith("a-rather-long-unreachable-webhook-path") and "payload" not in outbox[0]
    [k] = json.loads(runner.invoke(app, ["keys", "list", "--db", url, "--json"]).stdout)
    assert k["key_id"] == key_id and k["groups"] == ["refunds"] and "token" not in json.dumps(k)
