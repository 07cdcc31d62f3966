"""Each example of the article, as shipped in policies/, does what it says."""

from __future__ import annotations

import pytest

from policyengine.dsl import check, discover_sets, load_policy_set
from policyengine.types import Action

from .helpers import POLICIES

DESIGN_SKETCH = """
policy "support-desk" version 3

model qwen-72b      { provider openai   base_url env("QWEN_URL")  keys [env("QWEN_KEY_1"), env("QWEN_KEY_2")]  cost 0  context 32768 }
model gemma-27b     { provider openai   base_url env("GEMMA_URL") cost 0 }
model kimi-large    { provider openai   base_url env("KIMI_URL")  context 200000 }
model bedrock-llama { provider bedrock  region "eu-west-2"  model_id "meta.llama3-70b-instruct-v1:0"  cost 0.00265 per 1k tokens }

route default                             -> qwen-72b fallback [gemma-27b, kimi-large, bedrock-llama]
route when use_case == "code"             -> qwen-72b
route when use_case == "summarisation"    -> gemma-27b
route when tenant.tier == "enterprise"    -> qwen-72b sticky session
allow model choice [qwen-72b, gemma-27b] when user.role == "power"

authorize classify_ticket, draft_response, route_department
require approval for refund when amount > 100 GBP {
  reviewers group "refunds"    notify slack "#refunds", email "refunds@example.com"
  remind every 1h              timeout 8h -> deny
}
require approval for send_email, modify_database, escalate_legal, respond_press
deny delete_account

lexicon litigation ["lawsuit", "sue", "solicitor", "attorney", "legal action", "court"]
escalate when sentiment < 0.3
escalate when text mentions litigation
escalate when confidence < 0.7
verify when use_case in ["legal", "medical"] with qwen-72b, gemma-27b {
  escalate when divergence > 0.25   otherwise tag "high-confidence"
}
"""

OK = {"sentiment": 0.9, "confidence": 0.9}


def test_design_sketch_is_valid_verbatim() -> None:
    from policyengine.dsl import check_sources, compile_sources

    ds = check_sources({"sketch.policy": DESIGN_SKETCH})
    assert [d.format() for d in ds if d.severity == "error"] == []
    # the sketch's bare `require approval for send_email, ...` names no reviewers, no channel and no
    # timeout: lint says so (W270-W272), and the set still loads
    assert {d.code for d in ds if d.line == 20} >= {"W270", "W271", "W272"}
    p = compile_sources({"sketch.policy": DESIGN_SKETCH})
    assert p.evaluate(Action(action="refund", fields={"amount": "150 GBP"}, signals=OK)).effect == "require_approval"


@pytest.mark.parametrize("policy_set", discover_sets(POLICIES), ids=lambda s: s[0].parent.name)
def test_every_example_set_lints_clean(policy_set: list) -> None:
    assert check(policy_set) == []


def test_primary_fallback() -> None:
    p = load_policy_set([POLICIES / "primary-fallback"])
    r = p.route(Action(action="chat"))
    assert r.chain == ["qwen-72b", "gemma-27b", "kimi-large", "bedrock-llama"] and r.sticky and r.sticky_return
    assert [k.name for k in p.models["qwen-72b"].keys] == ["QWEN_KEY_1", "QWEN_KEY_2"]


def test_use_case_routing() -> None:
    p = load_policy_set([POLICIES / "use-case-routing"])
    first = {u: p.route(Action(action="chat", use_case=u)).chain[0]
             for u in ("code", "summarisation", "classification", "legal", "compliance", "chit-chat")}
    assert first == {"code": "qwen-72b", "summarisation": "gemma-27b", "classification": "gemma-9b",
                     "legal": "kimi-large", "compliance": "kimi-large", "chit-chat": "qwen-72b"}


def test_tenant_routing() -> None:
    p = load_policy_set([POLICIES / "tenant-routing"])
    assert p.route(Action(action="chat", tenant_tier="enterprise")).chain[0] == "qwen3.6-72b"
    assert p.route(Action(action="chat", tenant_tier="standard")).chain[0] == "gemma4-31b"
    internal = p.route(Action(action="chat", channel="internal-tools", tenant_tier="enterprise"))
    assert internal.chain[0] == "ollama/local" and p.models["ollama/local"].self_hosted
    bank = p.route(Action(action="chat", tenant="acme-bank", tenant_tier="enterprise"))
    assert bank.chain == ["qwen3.6-72b", "bedrock-llama"] and bank.sticky


def test_user_switchable() -> None:
    p = load_policy_set([POLICIES / "user-switchable"])
    assert p.evaluate(Action(action="chat", requested_model="gemma-27b")).routing.chain == ["gemma-27b", "qwen-72b"]
    assert p.evaluate(Action(action="chat", requested_model="kimi-large")).effect == "deny"
    d = p.evaluate(Action(action="chat", actor_role="power", requested_model="kimi-large"))
    assert d.effect == "allow" and d.routing.chain[0] == "kimi-large"
    assert d.allowed_models == ["qwen-72b", "gemma-27b", "kimi-large"]


def test_approval_gates() -> None:
    p = load_policy_set([POLICIES / "approval-gates"])
    d = p.evaluate(Action(action="send_email"))
    assert d.effect == "require_approval"
    assert [(c.kind, c.target) for c in d.obligations[0].channels] == [
        ("slack", "#outbound-email"), ("teams", "https://example.webhook.office.com/webhookb2/comms")]
    d = p.evaluate(Action(action="modify_database", fields={"environment": "production"}))
    assert d.effect == "require_approval" and d.obligations[0].escalate_to == "platform-leads"
    assert p.evaluate(Action(action="modify_database", fields={"environment": "staging", "statement_kind": "dml"})).effect == "allow"
    assert p.evaluate(Action(action="modify_database", fields={"environment": "staging", "statement_kind": "ddl"})).effect == "require_approval"
    # no environment given: fail-safe, held
    assert p.evaluate(Action(action="modify_database")).effect == "require_approval"
    assert p.evaluate(Action(action="drop_database")).effect == "deny"
    assert p.evaluate(Action(action="read_database")).effect == "allow"


def test_dual_verification() -> None:
    p = load_policy_set([POLICIES / "dual-verification"])
    d = p.evaluate(Action(action="chat", use_case="clinical"))
    assert d.verification is not None and d.verification.threshold == 0.15
    d = p.evaluate(Action(action="chat", use_case="clinical", signals={"divergence": 0.2}))
    assert d.effect == "escalate" and d.obligations[0].group == "clinical-safety"
    d = p.evaluate(Action(action="chat", use_case="legal", signals={"divergence": 0.2}))
    assert d.effect == "allow" and d.tags == ["high-confidence"]
    assert p.evaluate(Action(action="chat", use_case="legal")).verification.judge is None
    # payments: a judge from the fleet, with its own timeout
    v = p.evaluate(Action(action="chat", use_case="payments")).verification
    assert v is not None and v.judge == "kimi-large" and v.judge_timeout == 15.0 and v.models == ["qwen-72b", "gemma-27b"]


def test_hybrid_cost_prefers_self_hosted() -> None:
    p = load_policy_set([POLICIES / "hybrid-cost"])
    chain = p.route(Action(action="chat")).chain
    assert chain == ["qwen-72b", "llama-13b", "bedrock-llama", "bedrock-qwen", "vertex-llama"]
    assert p.models["vertex-llama"].provider == "vertex" and p.models["llama-13b"].provider == "tgi"
    assert p.route(Action(action="chat", prompt_tokens=20000)).chain == ["qwen-72b", "bedrock-llama", "bedrock-qwen",
                                                                          "vertex-llama"]


def test_single_path_arguments() -> None:
    assert check(str(POLICIES / "support-desk")) == []
    assert check(POLICIES / "approval-gates" / "approval-gates.policy") == []
    assert load_policy_set(str(POLICIES / "support-desk")).name == "support-desk"


def test_fleet_deployments_compiles_to_deployments_a_dispatcher_can_call() -> None:
    from policyengine.dispatch.balance import targets_of

    p = load_policy_set([POLICIES / "fleet-deployments"])
    q = p.models["qwen-72b"]
    assert [d.name for d in q.deployments] == ["gpu-a", "gpu-b", "spot"] and q.balance == "latency"
    assert q.health is not None and q.health.path == "/health" and q.health.interval == 10.0
    tg = {t.deployment: t for t in targets_of(q)}
    assert tg["spot"].spec.keys[0].name == "QWEN_SPOT_KEY" and tg["gpu-a"].spec.keys[0].name == "QWEN_KEY"
    assert tg["gpu-a"].state_id == "qwen-72b@gpu-a" and tg["gpu-a"].max_concurrency == 32
    assert [t.spec.region for t in targets_of(p.models["bedrock-llama"])] == ["eu-west-2", "eu-west-1"]
    r = p.route(Action(action="chat", channel="voice"))
    assert (r.hedge_after, r.hedge_budget) == (0.25, 0.05)
    assert p.route(Action(action="chat", use_case="batch")).hedge_after is None
