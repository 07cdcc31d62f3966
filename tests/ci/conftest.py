"""Fixtures for the CI tools: two versions of a policy and a real decision log.

The log is written by the service's own `DecisionLogger` (hash chain, canonical
JSON, the record shape production writes) from decisions the v1 policy made.
"""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from policyengine.dsl import load_policy_set
from policyengine.store import DecisionLogger, LogEntry, upgrade
from policyengine.types import Action

DATA = Path(__file__).parent / "data"
V1 = DATA / "refunds_v1"  # require approval for refund when amount > 100 GBP
V2 = DATA / "refunds_v2"  # ... when amount > 50 GBP

CALM = {"sentiment": 0.8, "confidence": 0.95}

# (id, action) pairs; the ids say what each one is for.
ACTIONS: list[tuple[str, dict]] = [
    ("refund-20", {"action": "refund", "fields": {"amount": "20 GBP"}}),
    ("refund-49.99", {"action": "refund", "fields": {"amount": "49.99 GBP"}}),
    ("refund-50", {"action": "refund", "fields": {"amount": "50 GBP"}}),
    ("refund-50.01", {"action": "refund", "fields": {"amount": "50.01 GBP"}}),
    ("refund-75", {"action": "refund", "fields": {"amount": "75 GBP"}}),
    ("refund-99", {"action": "refund", "fields": {"amount": "99 GBP"}}),
    ("refund-100", {"action": "refund", "fields": {"amount": "100 GBP"}}),
    ("refund-100.01", {"action": "refund", "fields": {"amount": "100.01 GBP"}}),
    ("refund-150", {"action": "refund", "fields": {"amount": "150 GBP"}}),
    ("refund-75-angry", {"action": "refund", "fields": {"amount": "75 GBP"}, "signals": {"sentiment": 0.1}}),
    ("classify", {"action": "classify_ticket", "text": "my order is late"}),
    ("draft", {"action": "draft_response", "text": "please help"}),
    ("email", {"action": "send_email"}),
    ("delete", {"action": "delete_account"}),
    ("unknown", {"action": "launch_rocket"}),
    ("chat-code", {"action": "chat", "use_case": "code", "text": "write a parser"}),
    ("chat-summary", {"action": "chat", "use_case": "summarisation", "text": "summarise this"}),
    ("chat-legal", {"action": "chat", "use_case": "legal", "text": "is this clause ok",
                    "signals": {"divergence": 0.1}}),
    ("chat-litigation", {"action": "chat", "text": "I will sue you in court"}),
]
# refunds over 50 GBP and at most 100 GBP, calm (the angry one escalates either way)
AFFECTED = ["refund-50.01", "refund-75", "refund-99", "refund-100"]


def make_action(spec: dict) -> Action:
    data = dict(spec)
    data["signals"] = {**CALM, **spec.get("signals", {})}
    data.setdefault("tenant", "acme")
    return Action.model_validate(data)


@dataclass
class LoggedSet:
    url: str
    jsonl: Path
    ids: dict[str, str]  # our name -> decision id


async def _write_log(url: str, entries: list[LogEntry]) -> None:
    logger = DecisionLogger(url, sqlite_synchronous="OFF")
    await logger.start()
    try:
        for e in entries:
            await logger.log(e)
    finally:
        await logger.aclose()


def write_logged(url: str, jsonl: Path, *, repeat: int = 1, policy_dir: Path = V1) -> dict[str, str]:
    """Evaluate ACTIONS with the policy, log them through DecisionLogger, dump the same records as JSONL."""
    upgrade(url)
    policy = load_policy_set([str(policy_dir)])
    entries: list[LogEntry] = []
    ids: dict[str, str] = {}
    for r in range(repeat):
        for name, spec in ACTIONS:
            action = make_action(spec)
            d = policy.evaluate(action)
            decision_id = f"{name}#{r}" if repeat > 1 else name
            ids.setdefault(name, decision_id)
            entries.append(LogEntry(kind="chat" if action.action == "chat" else "evaluate", tenant="acme",
                                    action=action.model_dump(mode="json", exclude_defaults=True),
                                    decision=d.model_dump(mode="json"), actor="alice", id=decision_id,
                                    ts=1_790_000_000.0 + len(entries)))
    asyncio.run(_write_log(url, entries))
    engine = sa.create_engine(url)
    with engine.connect() as conn, jsonl.open("w", encoding="utf-8") as fh:
        for (text,) in conn.execute(sa.text("SELECT record FROM decisions ORDER BY seq")):
            fh.write(text + "\n")
    engine.dispose()
    return ids


@pytest.fixture(scope="session")
def logged(tmp_path_factory: pytest.TempPathFactory) -> LoggedSet:
    d = tmp_path_factory.mktemp("log")
    url = f"sqlite:///{d / 'decisions.db'}"
    ids = write_logged(url, d / "decisions.jsonl")
    return LoggedSet(url=url, jsonl=d / "decisions.jsonl", ids=ids)


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    """A writable copy of the v1 policy with its test file."""
    dest = tmp_path / "policies"
    shutil.copytree(V1, dest)
    return dest
