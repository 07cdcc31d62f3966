"""Grouping inputs (projection) and parallel workers must not change any dry-run result."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from policyengine.ci.replay.engine import replay
from policyengine.ci.replay.parallel import merge_reports, replay_parallel
from policyengine.ci.replay.sources import JsonlSource
from policyengine.cli import app
from policyengine.dsl import load_policy_set
from policyengine.types import Action

from .conftest import AFFECTED, LoggedSet

ROOT = Path(__file__).parents[2]
SUPPORT = ROOT / "policies" / "support-desk"
runner = CliRunner(env={"COLUMNS": "200", "NO_COLOR": "1"})

EDGE_AMOUNTS = ["50 GBP", "50.00 GBP", "50.01 GBP", "99.99 GBP", "100 GBP", "100.01 GBP", "£75", "75 USD",
                {"amount": 120, "currency": "GBP"}, {"amount": "49.5", "currency": "gbp"}, "lots", 75, None]
EDGE_SIGNALS = [0.0, 0.25, 0.2999, 0.3, 0.3001, 0.69, 0.7, 0.71, 1.0, "0.2", None, True]


def _random_action(rng: random.Random, i: int) -> dict:
    a: dict = {"action": rng.choice(["refund", "chat", "classify_ticket", "draft_response", "send_email",
                                     "delete_account", "wire_transfer"]),
               "tenant": rng.choice(["acme", "globex"]), "actor": f"u{i}"}
    if rng.random() < 0.8:
        a["text"] = rng.choice(["hello there", "I will SUE you", "see you in court!", "courtesy call", "",
                                "my attorney says hi", "lawsuits everywhere"]) + f" #{i}"
    sig: dict = {}
    for name in ("sentiment", "confidence"):
        if rng.random() < 0.85:
            sig[name] = rng.choice(EDGE_SIGNALS) if rng.random() < 0.5 else round(rng.random(), 3)
    if rng.random() < 0.1:
        sig["mentions.litigation"] = rng.choice([True, False, None, {"phrase": "sue"}])
    if a["action"] == "refund" and rng.random() < 0.9:
        a["fields"] = {"amount": rng.choice(EDGE_AMOUNTS)} if rng.random() < 0.7 else {
            "amount": f"{rng.randint(1, 20000) / 100:.2f} GBP"}
    if a["action"] == "chat":
        a["use_case"] = rng.choice([None, "code", "summarisation", "legal", "compliance", "medical"])
        a["tenant_tier"] = rng.choice([None, "standard", "enterprise"])
        a["actor_role"] = rng.choice([None, "agent", "power"])
        if rng.random() < 0.3:
            a["requested_model"] = rng.choice(["qwen-72b", "gemma-27b", "kimi-large"])
        if rng.random() < 0.5:
            a["prompt_tokens"] = rng.choice([10, 8192, 8193, 32768, 32769, 150000, rng.randint(1, 300000)])
        if a["use_case"] in ("legal", "medical") and rng.random() < 0.8:
            sig["divergence"] = rng.choice([0.0, 0.25, 0.2501, 0.5, round(rng.random(), 3)])
    a["signals"] = sig
    return {k: v for k, v in a.items() if v is not None}


@pytest.fixture(scope="module")
def random_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,000 decisions by the support-desk policy over edge values (thresholds, currencies, types)."""
    rng = random.Random(1234)
    policy = load_policy_set([str(SUPPORT)])
    path = tmp_path_factory.mktemp("rand") / "log.jsonl"
    with path.open("wb") as fh:
        for i in range(2000):
            a = Action.model_validate(_random_action(rng, i))
            d = policy.evaluate(a)
            fh.write(orjson.dumps({"id": f"r{i}", "ts": i, "action": a.model_dump(mode="json", exclude_defaults=True),
                                   "decision": d.model_dump(mode="json")}) + b"\n")
    return path


@pytest.fixture(scope="module")
def candidate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Several changes at once: refund threshold, sentiment threshold, a lexicon phrase, a route."""
    dest = tmp_path_factory.mktemp("cand") / "support-desk"
    shutil.copytree(SUPPORT, dest, ignore=shutil.ignore_patterns("*.yaml"))
    orders = dest / "10-orders.policy"
    orders.write_text(orders.read_text().replace("amount > 100 GBP", "amount > 50 GBP"))
    esc = dest / "20-escalation.policy"
    esc.write_text(esc.read_text().replace("sentiment < 0.3", "sentiment <= 0.3").replace('"court"]', '"court", "courtesy"]'))
    models = dest / "00-models.policy"
    models.write_text(models.read_text().replace('route when use_case == "code" -> qwen-72b',
                                                 'route when use_case == "code" -> kimi-large fallback [qwen-72b]'))
    return dest


def _comparable(r) -> dict:
    d = r.model_dump(mode="json", exclude={"elapsed_s", "rate_per_s", "unique_inputs", "peak_rss_mb", "cpu_s",
                                           "grouping"})
    for g in d["groups"]:
        g["examples"] = sorted(e["id"] for e in g["examples"])
    return d


def test_projection_equals_exact_replay(random_log: Path, candidate: Path) -> None:
    new = load_policy_set([str(candidate)])
    old = load_policy_set([str(SUPPORT)])
    for baseline, rematch in ((None, frozenset()), (old, frozenset()), (None, frozenset({"litigation"}))):
        grouped = replay(new, JsonlSource(random_log), baseline=baseline, max_examples=-1, rematch_lexicons=rematch)
        exact = replay(new, JsonlSource(random_log), baseline=baseline, max_examples=-1, exact=True,
                       rematch_lexicons=rematch)
        assert grouped.changed > 50  # the candidate really changes things
        assert {g.kind for g in grouped.groups} >= {"effect", "chain"}
        assert _comparable(grouped) == _comparable(exact)
        assert grouped.unique_inputs < exact.unique_inputs
        assert (grouped.grouping, exact.grouping) == ("projected", "exact")
    # and the logged decisions replay unchanged through the policy that made them
    same = replay(old, JsonlSource(random_log))
    assert same.changed == 0 and same.errors == 0


def test_parallel_equals_single_process(random_log: Path, candidate: Path, tmp_path: Path) -> None:
    new = load_policy_set([str(candidate)])
    single = replay(new, JsonlSource(random_log), max_examples=-1, source=str(random_log))
    out = tmp_path / "changes.jsonl"
    ticks: list[int] = []
    par = replay_parallel(new, JsonlSource(random_log), workers=3, max_examples=-1, changes_out=out,
                          progress=ticks.append)
    assert _comparable(par) == _comparable(single)
    assert sum(ticks) == 2000
    ids = sorted(orjson.loads(line)["id"] for line in out.read_bytes().splitlines())
    assert len(ids) == single.changed and len(set(ids)) == len(ids)


def test_parallel_database_cli(logged: LoggedSet) -> None:
    res = runner.invoke(app, ["dry-run", "--policy", "tests/ci/data/refunds_v2", "--against", logged.url,
                              "--workers", "2", "--format", "json", "--examples", "-1"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    effect = next(g for g in data["groups"] if g["kind"] == "effect")
    assert sorted(e["id"] for e in effect["examples"]) == sorted(AFFECTED)
    assert data["total"] == 19


def test_merge_keeps_earliest_examples(tmp_path: Path) -> None:
    policy = load_policy_set([str(SUPPORT)])
    parts = []
    for i in range(2):
        f = tmp_path / f"merge-{i}.jsonl"
        f.write_text("".join(json.dumps({"id": f"p{i}-{j}", "ts": 10 * j + i, "action": {
            "action": "refund", "fields": {"amount": "150 GBP"}, "signals": {"sentiment": 0.9, "confidence": 0.9}},
            "decision": {"effect": "allow"}}) + "\n" for j in range(4)))
        parts.append(replay(policy, JsonlSource(f), max_examples=3))
    merged = merge_reports(parts, max_examples=3)
    g = merged.groups[0]
    assert g.count == 8 and [e.id for e in g.examples] == ["p0-0", "p1-0", "p0-1"]
