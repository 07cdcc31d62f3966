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


def test_checkpoint_and_expect_head_through_the_cli(tmp_path, monkeypatch):
    import json

    url = f"sqlite:///{tmp_path / 'pe.db'}"
    assert runner.invoke(app, ["migrate", "--db", url]).exit_code == 0

    async def log(n: int) -> None:
        lg = DecisionLogger(url)
        await lg.start()
        for _ in range(n):
            await lg.log(LogEntry(kind="evaluate", tenant="acme", action={"action": "x"},
                                  decision={"effect": "allow", "action": "x", "policy_hash": "f" * 64}))
        await lg.aclose()

    asyncio.run(log(5))
    monkeypatch.delenv("POLICYENGINE_CHECKPOINT_KEY", raising=False)
    r = runner.invoke(app, ["log", "checkpoint", url])
    assert r.exit_code == 2 and "POLICYENGINE_CHECKPOINT_KEY is not set" in _flat(r.output)
    monkeypatch.setenv("POLICYENGINE_CHECKPOINT_KEY", "a-long-enough-test-key-0123456789")
    cp_file = tmp_path / "cp.json"
    r = runner.invoke(app, ["log", "checkpoint", url, "--out", str(cp_file)])
    assert r.exit_code == 0, r.output
    cp = json.loads(cp_file.read_text())
    assert json.loads(r.stdout) == cp and cp["decisions"]["count"] == 5
    assert runner.invoke(app, ["log", "checkpoint", url, "--out", str(cp_file)]).exit_code == 2  # never overwritten
    head = cp["decisions"]["head"]

    asyncio.run(log(2))  # the log continues from the checkpoint
    r = runner.invoke(app, ["verify-log", url, "--checkpoint", str(cp_file), "--expect-head", f"{head}:5"])
    assert r.exit_code == 0 and "3 anchor(s) hold" in _flat(r.stdout), r.output
    r = runner.invoke(app, ["verify-log", url, "--expect-head", head])  # HASH alone: the current head
    assert r.exit_code == 1 and "expects head" in _flat(r.stdout)
    r = runner.invoke(app, ["verify-log", url, "--expect-head", "nothex"])
    assert r.exit_code == 2

    engine = make_sync_engine(url)
    with engine.begin() as c:  # wipe the log and reset its head
        c.execute(sa.text("DELETE FROM decisions"))
        c.execute(sa.text("UPDATE decision_chain SET seq = 0, head_hash = :g"), {"g": "0" * 64})
    engine.dispose()
    r = runner.invoke(app, ["verify-log", url])
    assert r.exit_code == 0 and "0 decisions" in _flat(r.stdout) and "not anchored" in _flat(r.output)
    r = runner.invoke(app, ["verify-log", url, "--checkpoint", str(cp_file)])
    assert r.exit_code == 1 and "BROKEN" in _flat(r.stdout) and "has 0 rows" in _flat(r.stdout), r.output
    r = runner.invoke(app, ["verify-log", url, "--expect-head", f"{head}:5", "--json"])
    assert r.exit_code == 1 and json.loads(r.stdout)["table"] == "decisions"

    forged = {**cp, "decisions": {"count": 0, "head": "0" * 64}}
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    r = runner.invoke(app, ["verify-log", url, "--checkpoint", str(tmp_path / "forged.json")])
    assert r.exit_code == 2 and "signature does not match" in _flat(r.output)


def _flat(text: str) -> str:
    """Output with rich's line wrapping undone."""
    return " ".join(text.split())
