"""`policyengine migrate`, `verify-log` and `keys` through the real CLI (Typer runner, no subprocess)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from typer.testing import CliRunner

from policyengine.cli import app
from policyengine.store import DecisionLogger, LogEntry, make_sync_engine

runner = CliRunner()


def test_migrate_keys_and_verify_log(tmp_path):
    url = f"sqlite:///{tmp_path / 'pe.db'}"
    r = runner.invoke(app, ["migrate", "--db", url])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--role", "admin", "--role", "app",
                            "--subject", "ops@acme", "--attr", "tier=enterprise", "--db", url])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert token.startswith("pe_k_")
    r = runner.invoke(app, ["keys", "list", "--db", url])
    assert "acme" in r.stdout and token not in r.stdout
    key_id = token.split("_")[1] + "_" + token.split("_")[2]
    assert runner.invoke(app, ["keys", "create", "--tenant", "acme", "--role", "root", "--db", url]).exit_code == 2
    assert runner.invoke(app, ["keys", "revoke", key_id, "--db", url]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", key_id, "--db", url]).exit_code == 1

    async def log() -> None:
        lg = DecisionLogger(url)
        await lg.start()
        for i in range(20):
            await lg.log(LogEntry(kind="evaluate", tenant="acme", action={"action": "x"},
                                  decision={"effect": "allow", "action": "x", "policy_hash": "f" * 64,
                                            "signals": {"i": i}}))
        await lg.aclose()

    asyncio.run(log())
    r = runner.invoke(app, ["verify-log", url])
    assert r.exit_code == 0 and "20 decisions, chain intact" in r.stdout
    engine = make_sync_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("UPDATE decisions SET record = replace(record, :a, :b) WHERE seq = 8"),
                  {"a": '"i":7', "b": '"i":8'})
    engine.dispose()
    r = runner.invoke(app, ["verify-log", url])
    assert r.exit_code == 1 and "first bad row seq=8" in r.stdout
    assert runner.invoke(app, ["verify-log", "mysql://nope"]).exit_code == 2
