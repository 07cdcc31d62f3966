"""The support-desk policy set of the article, end to end through the evaluator."""

from __future__ import annotations

from policyengine.evaluator import CompiledPolicy
from policyengine.types import Action


def test_loads_three_files_as_one_set(support_desk: CompiledPolicy) -> None:
    assert support_desk.name == "support-desk"
    assert support_desk.version == 3
    assert len(support_desk.sources) == 3
    assert len(support_desk.hash) == 64
    assert set(support_desk.models) == {"qwen-72b", "gemma-27b", "kimi-large", "bedrock-llama"}
    assert support_desk.lexicons["litigation"][0] == "lawsuit"


def test_model_specs(support_desk: CompiledPolicy) -> None:
    q = support_desk.models["qwen-72b"]
    assert q.provider == "vllm"
    assert [k.name for k in q.keys] == ["QWEN_KEY_1", "QWEN_KEY_2"]
    assert q.self_hosted and q.context == 32768
    assert q.timeouts.connect == 2 and q.timeouts.first_token == 10 and q.timeouts.idle == 5 and q.timeouts.total == 60
    assert q.capabilities.prefill and q.capabilities.tools and q.capabilities.streaming
    g = support_desk.models["gemma-27b"]
    assert not g.capabilities.prefill
    b = support_desk.models["bedrock-llama"]
    assert b.provider == "bedrock" and b.region == "eu-west-2" and str(b.cost_per_1k) == "0.00265"
    assert b.upstream_model == "meta.llama3-70b-instruct-v1:0" and not b.self_hosted
    assert b.file is not None and b.file.endswith("00-models.policy") and b.line


def test_authorized_actions_run_alone(support_desk: CompiledPolicy) -> None:
    for name in ("classify_ticket", "draft_response", "route_department"):
        d = support_desk.evaluate(Action(action=name, text="Where is my parcel?", signals={"sentiment": 0.8, "confidence": 0.9}))
        assert d.effect == "allow", d.rules
        assert d.rules[0].kind == "authorize"
        assert d.rules[0].rule_id == "10-orders.policy:3"
        assert d.policy_hash == support_desk.hash


def test_refund_over_100_gbp_needs_approval_with_obligation(support_desk: CompiledPolicy) -> None:
    d = support_desk.evaluate(Action(action="refund", fields={"amount": "150 GBP"}, signals={"sentiment": 0.9, "confidence": 0.9}))
    assert d.effect == "require_approval"
    hit = next(h for h in d.rules if h.kind == "require_approval")
    assert hit.because == ["amount 150 GBP > 100 GBP"]
    assert hit.span is not None and hit.span.line == 5
    [o] = d.obligations
    assert o.group == "refunds"
    assert [(c.kind, c.target) for c in o.channels] == [("slack", "#refunds"), ("email", "refunds@example.com")]
    assert o.remind_every_s == 3600 and o.timeout_s == 8 * 3600 and o.on_timeout == "deny"


def test_small_refund_is_autonomous(support_desk: CompiledPolicy) -> None:
    d = support_desk.evaluate(Action(action="refund", fields={"amount": {"amount": 40, "currency": "GBP"}},
                                     signals={"sentiment": 0.9, "confidence": 0.9}))
    assert d.effect == "allow"


def test_refund_in_other_currency_is_held_not_passed(support_desk: CompiledPolicy) -> None:
    d = support_desk.evaluate(Action(action="refund", fields={"amount": "90 USD"}, signals={"sentiment": 0.9, "confidence": 0.9}))
    assert d.effect == "require_approval"
    because = " ".join(next(h for h in d.rules if h.kind == "require_approval").because)
    assert "currency mismatch" in because and "fail-safe" in because


def test_refund_without_amount_is_held(support_desk: CompiledPolicy) -> None:
    d = support_desk.evaluate(Action(action="refund", signals={"sentiment": 0.9, "confidence": 0.9}))
    assert d.effect == "require_approval"
    assert "amount not supplied" in d.rules[0].because[0]


def test_approval_gates_and_timeout_escalation(support_desk: CompiledPolicy) -> None:
    for name in ("send_email", "modify_database", "escalate_legal", "respond_press"):
        d = support_desk.evaluate(Action(action=name, signals={"sentiment": 0.9, "confidence": 0.9}))
        assert d.effect == "require_approval"
        [o] = d.obligations
        assert o.group == "support-leads" and o.on_timeout == "escalate" and o.escalate_to == "duty-manager"
        assert o.remind_every_s == 1800 and o.timeout_s == 4 * 3600


def test_deny_wins_over_everything(support_desk: CompiledPolicy) -> None:
    d = support_desk.evaluate(Action(action="delete_account", text="I will sue", signals={"sentiment": 0.0}))
    assert d.effect == "deny"
    assert [h.kind for h in d.rules] == ["deny"]
    assert d.signals == {}  # no signal computed for a denied action


def test_unknown_action_default_deny(support_desk: CompiledPolicy) -> None:
    d = support_desk.evaluate(Action(action="wire_transfer", signals={"sentiment": 0.9, "confidence": 0.9}))
    assert d.effect == "deny" and d.default_applied
    assert d.rules[-1].kind == "default"


def test_escalation_triggers(support_desk: CompiledPolicy) -> None:
    d = support_desk.evaluate(Action(action="draft_response", signals={"sentiment": 0.21, "confidence": 0.9}))
    assert d.effect == "escalate"
    hit = next(h for h in d.rules if h.kind == "escalate")
    assert hit.because == ["sentiment 0.21 < 0.3"]
    assert d.signals["sentiment"] == 0.21
    assert d.obligations[0].group == "support-leads"

    d = support_desk.evaluate(Action(action="draft_response", text="My solicitor will be in touch",
                                     signals={"sentiment": 0.5, "confidence": 0.9}))
    assert d.effect == "escalate"
    assert any("litigation" in b for h in d.rules for b in h.because)
    assert d.signals["mentions:litigation"]["matched_text"] == "solicitor"

    d = support_desk.evaluate(Action(action="classify_ticket", signals={"sentiment": 0.5, "confidence": 0.42}))
    assert d.effect == "escalate"
    assert any(b == "confidence 0.42 < 0.7" for h in d.rules for b in h.because)


def test_lexicon_match_is_whole_word(support_desk: CompiledPolicy) -> None:
    d = support_desk.evaluate(Action(action="classify_ticket", text="The issue was pursued by Susan",
                                     signals={"sentiment": 0.5, "confidence": 0.9}))
    assert d.effect == "allow"


def test_escalation_beats_approval_and_collects_both_obligations(support_desk: CompiledPolicy) -> None:
    d = support_desk.evaluate(Action(action="refund", fields={"amount": "500 GBP"}, text="or I sue",
                                     signals={"sentiment": 0.9, "confidence": 0.9}))
    assert d.effect == "escalate"
    assert {o.group for o in d.obligations} == {"refunds", "legal"}


def test_chat_routing(support_desk: CompiledPolicy) -> None:
    ok = {"sentiment": 0.9, "confidence": 0.9}
    d = support_desk.evaluate(Action(action="chat", signals=ok))
    assert d.effect == "allow"
    assert d.routing.chain == ["qwen-72b", "gemma-27b", "kimi-large", "bedrock-llama"]
    d = support_desk.evaluate(Action(action="chat", use_case="summarisation", signals=ok))
    assert d.routing.chain[0] == "gemma-27b"
    # a route without `fallback` inherits the default route's chain
    assert d.routing.chain == ["gemma-27b", "qwen-72b", "kimi-large", "bedrock-llama"]
    d = support_desk.evaluate(Action(action="chat", tenant_tier="enterprise", signals=ok))
    assert d.routing.chain[0] == "qwen-72b" and d.routing.sticky
    d = support_desk.evaluate(Action(action="chat", use_case="legal", signals=ok))
    assert d.routing.chain == ["kimi-large", "bedrock-llama"]


def test_chat_escalates_on_litigation(support_desk: CompiledPolicy) -> None:
    d = support_desk.evaluate(Action(action="chat", text="we are filing a lawsuit", signals={"sentiment": 0.5, "confidence": 0.9}))
    assert d.effect == "escalate"
    assert d.routing.chain  # the chain is still reported


def test_verification_for_legal_and_medical(support_desk: CompiledPolicy) -> None:
    ok = {"sentiment": 0.9, "confidence": 0.9}
    d = support_desk.evaluate(Action(action="chat", use_case="medical", signals=ok))
    assert d.effect == "allow"
    assert d.verification is not None
    assert d.verification.models == ["qwen-72b", "gemma-27b"]
    assert d.verification.threshold == 0.25 and d.verification.tag == "high-confidence"
    # second pass, after the service ran both models
    d = support_desk.evaluate(Action(action="chat", use_case="medical", signals={**ok, "divergence": 0.1}))
    assert d.effect == "allow" and d.tags == ["high-confidence"]
    d = support_desk.evaluate(Action(action="chat", use_case="medical", signals={**ok, "divergence": 0.4}))
    assert d.effect == "escalate" and d.tags == []
    assert any(b == "divergence 0.4 > 0.25" for h in d.rules for b in h.because)
    assert d.obligations[0].group == "compliance"
    d = support_desk.evaluate(Action(action="chat", use_case="code", signals=ok))
    assert d.verification is None


def test_user_switchable_allowlist(support_desk: CompiledPolicy) -> None:
    ok = {"sentiment": 0.9, "confidence": 0.9}
    power = Action(action="chat", actor_role="power", requested_model="gemma-27b", signals=ok)
    assert support_desk.allowed_models(power) == ["qwen-72b", "gemma-27b"]
    d = support_desk.evaluate(power)
    assert d.effect == "allow"
    assert d.routing.chain[0] == "gemma-27b"
    assert d.allowed_models == ["qwen-72b", "gemma-27b"]
    d = support_desk.evaluate(Action(action="chat", actor_role="power", requested_model="kimi-large", signals=ok))
    assert d.effect == "deny"
    assert "not on this caller's allowlist" in d.rules[-1].because[0]
    d = support_desk.evaluate(Action(action="chat", actor_role="agent", requested_model="gemma-27b", signals=ok))
    assert d.effect == "deny"


def test_context_window_aware(support_desk: CompiledPolicy) -> None:
    ok = {"sentiment": 0.9, "confidence": 0.9}
    d = support_desk.evaluate(Action(action="chat", prompt_tokens=50_000, signals=ok))
    assert d.routing.chain == ["kimi-large", "bedrock-llama"]
    route_hit = next(h for h in d.rules if h.kind == "route")
    assert "dropped qwen-72b: context 32768 < 50000 prompt tokens" in route_hit.because
    d = support_desk.evaluate(Action(action="chat", prompt_tokens=500_000, signals=ok))
    assert d.effect == "deny"
    assert "no model in the chain" in d.rules[-1].because[-1]


def test_decision_serialises(support_desk: CompiledPolicy) -> None:
    d = support_desk.evaluate(Action(action="refund", fields={"amount": "150 GBP"}, signals={"sentiment": 0.9, "confidence": 0.9}))
    again = type(d).model_validate_json(d.model_dump_json())
    assert again.effect == d.effect and again.obligations[0].group == "refunds"


def test_fast_constructed_decision_equals_validated_one(support_desk: CompiledPolicy) -> None:
    from policyengine.types import Decision

    for a in (Action(action="refund", fields={"amount": "150 GBP"}, signals={"sentiment": 0.9, "confidence": 0.9}),
              Action(action="chat", use_case="legal", signals={"sentiment": 0.9, "confidence": 0.9}),
              Action(action="nope")):
        d = support_desk.evaluate(a)
        assert set(d.__dict__) == set(Decision.model_fields)
        validated = Decision.model_validate(d.model_dump())
        assert validated == d


def test_signals_needed_names_match_the_signal_precompute(support_desk: CompiledPolicy) -> None:
    assert support_desk.signals_needed("delete_account") == {"sentiment", "confidence", "mentions:litigation"}
    assert support_desk.signals_needed(Action(action="chat", signals={"sentiment": 0.5})) == {
        "confidence", "mentions:litigation"}


def test_supplied_mention_results_win(support_desk: CompiledPolicy) -> None:
    from policyengine.signals.base import MentionMatch

    ok = {"sentiment": 0.9, "confidence": 0.9}
    # computed upstream: no match (None) even though the exact phrase is there
    d = support_desk.evaluate(Action(action="classify_ticket", text="court", signals={**ok, "mentions:litigation": None}))
    assert d.effect == "allow"
    m = MentionMatch(lexicon="litigation", phrase="sue", matched_text="suing", start=3, end=8, method="lexical")
    d = support_desk.evaluate(Action(action="classify_ticket", text="am suing", signals={**ok, "mentions:litigation": m}))
    assert d.effect == "escalate"
    assert any("'suing' ~ 'sue'" in b for h in d.rules for b in h.because)
