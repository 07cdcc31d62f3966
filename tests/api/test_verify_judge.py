"""Dual-model verification with a judge model, end to end: the real service on loopback, the real
`openai` SDK as the client, and simulated OpenAI-compatible upstreams (qwen-72b, gemma-27b, and
kimi-large as the judge) answering over HTTP with real error bodies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import openai
import pytest

from policyengine.signals.judge import JUDGE_SYSTEM_PROMPT
from policyengine.simulate.faults import Fault
from policyengine.simulate.server import SimServer

from .conftest import POLICIES

MSG = [{"role": "user", "content": "Where will my refund be paid, and how much is it?"}]
DIFF = "No. The refund was refused on 3 March and you owe us 500 GBP."

VERIFY = '''verify when use_case in ["legal", "medical"] with qwen-72b, gemma-27b {
  escalate when divergence > 0.25 otherwise tag "high-confidence"
}'''
JUDGED = '''verify when use_case == "legal" with qwen-72b, gemma-27b judge kimi-large timeout 30s {
  escalate when divergence > 0.25 otherwise tag "high-confidence"
}
verify when use_case == "medical" with qwen-72b, gemma-27b judge kimi-large timeout 1s {
  escalate when divergence > 0.15 otherwise tag "high-confidence"
}
verify when use_case == "billing" with qwen-72b, gemma-27b judge kimi-large fallback [mistral-large] timeout 30s {
  escalate when divergence > 0.25 otherwise tag "high-confidence"
}
model mistral-large {
  provider openai
  base_url env("PE_T_MISTRAL_URL")
  cost 0.002 per 1k tokens
}'''


@pytest.fixture
def judged_policies(tmp_path: Path) -> Path:
    text = (POLICIES / "gateway.policy").read_text()
    assert VERIFY in text
    d = tmp_path / "policies"
    d.mkdir()
    (d / "gateway.policy").write_text(text.replace(VERIFY, JUDGED))
    return d


@pytest.fixture
async def mistral(monkeypatch):
    """A fourth upstream (the judge's fallback in the `billing` rule), an OpenAI-style server."""
    sim = SimServer("mistral-large", flavour="openai")
    await sim.start()
    monkeypatch.setenv("PE_T_MISTRAL_URL", sim.url)
    yield sim
    await sim.stop()


@pytest.fixture
async def judged(service_factory, judged_policies, tmp_path, mistral):
    async with service_factory(f"sqlite:///{tmp_path / 'pe.db'}", policy_dir=judged_policies) as svc:
        yield svc


async def _verdict(service, decision_id: str) -> dict:
    """The decision with its verdict row (written before the answer is sent or held)."""
    for _ in range(100):
        async with service.client() as c:
            r = await c.get(f"/v1/decisions/{decision_id}")
        assert r.status_code == 200, r.text
        rec = r.json()
        if "outcome_row" in rec:
            return rec
        await asyncio.sleep(0.05)
    raise AssertionError(f"no verdict row for decision {decision_id}")


async def _legal(service, use_case: str = "legal"):
    return await service.sdk().chat.completions.with_raw_response.create(
        model="auto", messages=MSG, extra_headers={"X-PolicyEngine-Use-Case": use_case})


async def test_the_judges_verdict_decides_and_is_logged(judged):
    sims = judged.sims
    # 1. identical answers (the embedded score is 0), but the judge says they diverge: escalated
    sims["kimi-large"].answer = ('```json\n{"divergent": true, "reason": "A pays the card ending 4411, '
                                 'B the bank account"}\n```')
    with pytest.raises(openai.ConflictError) as exc:
        await _legal(judged)
    assert exc.value.body["effect"] == "escalate"
    rec = await _verdict(judged, exc.value.body["decision_id"])
    ver = rec["outcome_row"]["record"]["extra"]["verification"]
    assert ver["decided_by"] == "judge" and ver["judge_status"] == "ok" and ver["divergence"] == 1.0
    assert ver["embedded_divergence"] <= 0.25 and ver["aligned"] is False
    assert ver["judge"]["model"] == "kimi-large" and ver["judge"]["divergent"] is True
    assert ver["judge"]["reason"] == "A pays the card ending 4411, B the bank account"
    assert ver["judge"]["usage"]["total_tokens"] > 0 and ver["judge"]["cost"]["amount"]
    assert ver["reasons"] == ["judge kimi-large: divergent: A pays the card ending 4411, B the bank account"]
    assert any("verification judge kimi-large (ok): divergent: A pays the card ending 4411" in line
               for line in rec["explanation"])
    assert any(line.startswith("verify -> escalate") and "judge kimi-large: divergent" in line
               for line in rec["explanation"])
    # the judge was dispatched like any call: its attempt is in the row, beside the two answers'
    assert sorted(a["model"] for a in rec["outcome_row"]["record"]["attempts"]) == [
        "gemma-27b", "kimi-large", "qwen-72b"]
    seen = sims["kimi-large"].seen()[-1].body
    assert seen["messages"][0]["content"] == JUDGE_SYSTEM_PROMPT and "metadata" not in seen

    # 2. answers the embedded comparator calls divergent; the judge says same: delivered, tagged
    sims["gemma-27b"].answer = DIFF
    sims["kimi-large"].answer = 'Here you go: {"divergent": false, "reason": "both say the same"} Thanks!'
    raw = await _legal(judged)
    assert "high-confidence" in raw.headers["x-policyengine-tags"]
    assert float(raw.headers["x-policyengine-divergence"]) == 0.0
    rec = await _verdict(judged, raw.headers["x-policyengine-decision-id"])
    ver = rec["outcome_row"]["record"]["extra"]["verification"]
    assert ver["decided_by"] == "judge" and ver["judge"]["divergent"] is False and ver["aligned"] is True
    assert ver["embedded_divergence"] > 0.25  # without the judge this would have escalated
    assert rec["effect"] == "allow"

    # 3. an answer with no verdict in it: the embedded comparator decides (and escalates these)
    sims["kimi-large"].answer = "I would say they are broadly similar answers."
    with pytest.raises(openai.ConflictError) as exc:
        await _legal(judged)
    rec = await _verdict(judged, exc.value.body["decision_id"])
    ver = rec["outcome_row"]["record"]["extra"]["verification"]
    assert ver["decided_by"] == "embedded" and ver["judge_status"] == "unparseable"
    assert ver["judge"]["raw"] == "I would say they are broadly similar answers."
    assert ver["divergence"] == ver["embedded_divergence"] > 0.25
    assert any("verification judge kimi-large (unparseable)" in line and "embedded comparator decided" in line
               for line in rec["explanation"])


async def test_a_judge_that_errors_leaves_the_embedded_comparator_to_decide(judged):
    sims = judged.sims
    sims["kimi-large"].add_fault(Fault(kind="error", status=500, times=None))
    # identical answers: the embedded comparator lets them out, and the log says the judge failed
    raw = await _legal(judged)
    assert "high-confidence" in raw.headers["x-policyengine-tags"]
    rec = await _verdict(judged, raw.headers["x-policyengine-decision-id"])
    ver = rec["outcome_row"]["record"]["extra"]["verification"]
    assert ver["decided_by"] == "embedded" and ver["judge_status"] == "error"
    # the upstream's real error, classified by the dispatcher (kimi-large is a vLLM: an engine crash)
    assert ver["judge"]["divergent"] is None and "engine_crashed" in ver["judge"]["error"]
    judge_attempts = [a for a in rec["outcome_row"]["record"]["attempts"] if a["model"] == "kimi-large"]
    assert judge_attempts and all(a["status"] == 500 for a in judge_attempts)
    # divergent answers: the embedded comparator escalates them
    sims["gemma-27b"].answer = DIFF
    with pytest.raises(openai.ConflictError) as exc:
        await _legal(judged)
    rec = await _verdict(judged, exc.value.body["decision_id"])
    ver = rec["outcome_row"]["record"]["extra"]["verification"]
    assert ver["decided_by"] == "embedded" and ver["judge_status"] == "error"
    assert any("embedded comparator decided" in r for r in ver["reasons"])


async def test_a_judge_that_hangs_times_out_and_the_embedded_comparator_decides(judged):
    sims = judged.sims
    sims["kimi-large"].add_fault(Fault(kind="hang", times=None))
    sims["gemma-27b"].answer = DIFF
    with pytest.raises(openai.ConflictError) as exc:
        await _legal(judged, "medical")  # the rule with `judge kimi-large timeout 1s`
    rec = await _verdict(judged, exc.value.body["decision_id"])
    ver = rec["outcome_row"]["record"]["extra"]["verification"]
    assert ver["decided_by"] == "embedded" and ver["judge_status"] == "timeout"
    assert ver["judge"]["timeout_s"] == 1.0 and ver["judge"]["error"] == "no verdict within 1s"
    assert len(sims["kimi-large"].requests) == 1


async def test_the_judge_fails_over_along_its_fallbacks(judged, mistral):
    judged.sims["kimi-large"].down(60)  # connection refused: the dispatcher fails over to the fallback
    mistral.answer = '{"divergent": true, "reason": "A says 5 working days, B says 10"}'
    with pytest.raises(openai.ConflictError) as exc:
        await _legal(judged, "billing")
    rec = await _verdict(judged, exc.value.body["decision_id"])
    ver = rec["outcome_row"]["record"]["extra"]["verification"]
    assert ver["decided_by"] == "judge" and ver["judge"]["model"] == "kimi-large"
    assert ver["judge"]["answered_by"] == "mistral-large" and ver["judge"]["reason"] == "A says 5 working days, B says 10"
    assert ver["judge"]["cost"]["amount"] != "0"  # at the fallback's price
    models = [a["model"] for a in rec["outcome_row"]["record"]["attempts"]]
    assert "kimi-large" in models and models[-1] == "mistral-large"
    assert any("verification judge mistral-large (ok): divergent" in line for line in rec["explanation"])
