"""Every construct of the language, parsed, compiled and evaluated."""

from __future__ import annotations

from decimal import Decimal
from itertools import combinations
from typing import Any

import pytest

from policyengine.dsl import ast, compile_sources, parse
from policyengine.dsl.compiler import content_hash
from policyengine.signals.base import MentionMatch
from policyengine.types import Action

from .helpers import MODELS, compile_text, with_models

# --------------------------------------------------------------------------- literals


@pytest.mark.parametrize(("lit", "amount", "cur"), [
    ("100 GBP", "100", "GBP"), ("99.50 EUR", "99.50", "EUR"), ("£100", "100", "GBP"), ("$20", "20", "USD"),
    ("€15.5", "15.5", "EUR"), ("1_000 JPY", "1000", "JPY"), ("100GBP", "100", "GBP"),
])
def test_money_literals(lit: str, amount: str, cur: str) -> None:
    [_, rule] = parse(f'policy "t"\nauthorize refund when amount > {lit}\n').items
    assert isinstance(rule, ast.Authorize) and isinstance(rule.cond, ast.Cmp)
    assert rule.cond.value.kind == "money"
    assert rule.cond.value.value == (Decimal(amount), cur)


@pytest.mark.parametrize(("lit", "seconds"), [("500ms", "0.5"), ("30s", "30"), ("5m", "300"), ("1h", "3600"),
                                              ("2d", "172800"), ("1.5h", "5400")])
def test_duration_literals(lit: str, seconds: str) -> None:
    [_, rule] = parse(f'policy "t"\nescalate when waited > {lit}\n').items
    assert rule.cond.value.kind == "duration" and rule.cond.value.value == Decimal(seconds)  # type: ignore[union-attr]


def test_strings_numbers_booleans_lists_comments() -> None:
    f = parse('policy "t" version "2026-01"  # trailing\n// own line\n'
              'authorize a when note == "say \\"hi\\"\\n" and n >= -3.5 and vip == true and tier in ["a", "b"]\n')
    header, rule = f.items
    assert header == ast.PolicyDecl("t", "2026-01")
    c = rule.cond
    assert isinstance(c, ast.And)
    assert c.items[0].value.value == 'say "hi"\n'  # type: ignore[union-attr]
    assert c.items[1].value.value == Decimal("-3.5")  # type: ignore[union-attr]
    assert c.items[2].value.value is True  # type: ignore[union-attr]
    assert [v.value for v in c.items[3].values] == ["a", "b"]  # type: ignore[union-attr]
    assert [x.text for x in f.comments] == ["# trailing", "// own line"]


def test_names_with_dots_dashes_slashes() -> None:
    p = compile_text('policy "t"\nmodel ollama/local { provider ollama base_url env("O") }\n'
                     'model qwen3.6-72b { provider vllm base_url env("Q") }\n'
                     "route default -> qwen3.6-72b fallback [ollama/local]\n")
    assert p.route(Action(action="chat")).chain == ["qwen3.6-72b", "ollama/local"]


# --------------------------------------------------------------------------- models


def test_model_every_property() -> None:
    p = compile_text('policy "t"\nmodel v {\n provider vertex\n project env("GCP_PROJECT")\n region "europe-west4"\n'
                     ' model_id "meta/llama-3.1-70b"\n cost 2.5 per 1m tokens\n context 128000\n'
                     ' timeout connect 1500ms total 2m\n supports streaming\n header "X-Org" env("ORG")\n}\n'
                     'model o { provider tgi base_url "http://127.0.0.1:8080/v1" supports }\n')
    v = p.models["v"]
    assert v.provider == "vertex" and str(v.project) == 'env("GCP_PROJECT")' and v.region == "europe-west4"
    assert v.cost_per_1k == Decimal("0.0025")
    assert v.timeouts.connect == 1.5 and v.timeouts.total == 120 and v.timeouts.first_token is None
    assert v.capabilities.streaming and not v.capabilities.tools and not v.capabilities.prefill
    assert v.headers["X-Org"].name == "ORG"  # type: ignore[union-attr]
    o = p.models["o"]
    assert o.base_url == "http://127.0.0.1:8080/v1" and o.self_hosted and o.upstream_model == "o"
    assert not o.capabilities.streaming and not o.capabilities.tools
    assert o.line == 13 and o.file == "t.policy"


def test_model_defaults() -> None:
    p = compile_text('policy "t"\nmodel m { provider openai base_url env("U") }\n')
    m = p.models["m"]
    assert m.capabilities.streaming and m.capabilities.tools and not m.capabilities.prefill
    assert m.keys == () and m.context is None and m.self_hosted


# --------------------------------------------------------------------------- routing


def test_route_first_match_in_file_order_across_files() -> None:
    p = compile_sources({
        "a.policy": MODELS + 'route when tenant == "acme" -> gemma-27b\n',
        "b.policy": 'route default -> qwen-72b\nroute when tenant.tier == "enterprise" -> kimi-large\n',
    })
    d = p.evaluate(Action(action="chat", tenant="acme", tenant_tier="enterprise"))
    assert d.routing.chain[0] == "gemma-27b" and d.routing.rule_id == "a.policy:6"
    assert p.route(Action(action="chat", tenant="other", tenant_tier="enterprise")).chain[0] == "kimi-large"
    assert p.route(Action(action="chat")).rule_id == "b.policy:1"


def test_fallback_inherit_explicit_and_empty() -> None:
    p = with_models("route default -> qwen-72b fallback [gemma-27b, kimi-large]\n"
                    'route when use_case == "a" -> kimi-large\n'
                    'route when use_case == "b" -> gemma-27b fallback []\n'
                    'route when use_case == "c" -> bedrock-llama fallback [gemma-27b]\n')
    assert p.route(Action(action="chat", use_case="a")).chain == ["kimi-large", "qwen-72b", "gemma-27b"]
    assert p.route(Action(action="chat", use_case="b")).chain == ["gemma-27b"]
    assert p.route(Action(action="chat", use_case="c")).chain == ["bedrock-llama", "gemma-27b"]


def test_sticky_and_return_on_recovery() -> None:
    p = with_models("route default -> qwen-72b sticky session return on recovery\n"
                    'route when tenant == "x" -> gemma-27b sticky session\n')
    r = p.route(Action(action="chat"))
    assert r.sticky and r.sticky_return
    r = p.route(Action(action="chat", tenant="x"))
    assert r.sticky and not r.sticky_return


def test_on_rate_limit_wait_up_to() -> None:
    p = with_models("route default -> qwen-72b fallback [gemma-27b] on rate_limit wait up to 1500ms\n"
                    'route when tenant == "x" -> gemma-27b fallback [qwen-72b]\n')
    assert p.evaluate(Action(action="chat")).routing.rate_limit_wait == 1.5
    assert p.evaluate(Action(action="chat", tenant="x")).routing.rate_limit_wait is None  # default: no wait


def test_prefer_self_hosted_is_a_stable_reorder() -> None:
    p = with_models("route default -> bedrock-llama fallback [kimi-large, qwen-72b, gemma-27b] prefer self_hosted\n")
    d = p.evaluate(Action(action="chat"))
    assert d.routing.chain == ["qwen-72b", "gemma-27b", "bedrock-llama", "kimi-large"]
    assert d.routing.prefer_self_hosted
    assert "prefer self_hosted: cost-0 models first" in d.rules[0].because


def test_route_conditions_on_every_attribute() -> None:
    p = with_models("route default -> qwen-72b\n"
                    'route when channel == "internal-tools" -> gemma-27b\n'
                    'route when user.role == "admin" and prompt_tokens > 10000 -> kimi-large\n'
                    'route when fields.region == "us" -> bedrock-llama\n')
    assert p.route(Action(action="chat", channel="internal-tools")).chain[0] == "gemma-27b"
    assert p.route(Action(action="chat", actor_role="admin", prompt_tokens=20000)).chain[0] == "kimi-large"
    assert p.route(Action(action="chat", actor_role="admin", prompt_tokens=20)).chain[0] == "qwen-72b"
    assert p.route(Action(action="chat", fields={"region": "us"})).chain[0] == "bedrock-llama"


def test_no_route_denies_chat() -> None:
    p = with_models('route when use_case == "code" -> qwen-72b\n')
    d = p.evaluate(Action(action="chat", use_case="poetry"))
    assert d.effect == "deny" and "no route matches" in d.rules[-1].because[0]


def test_allow_model_choice_union_and_unconditional() -> None:
    p = with_models("route default -> qwen-72b fallback [gemma-27b]\nallow model choice [qwen-72b, gemma-27b]\n"
                    'allow model choice [kimi-large, gemma-27b] when user.role in ["power", "admin"]\n')
    assert p.allowed_models(Action(action="chat")) == ["qwen-72b", "gemma-27b"]
    assert p.allowed_models(Action(action="chat", actor_role="admin")) == ["qwen-72b", "gemma-27b", "kimi-large"]
    d = p.evaluate(Action(action="chat", actor_role="admin", requested_model="kimi-large"))
    assert d.effect == "allow" and d.routing.chain == ["kimi-large", "qwen-72b", "gemma-27b"]


def test_requested_model_still_context_filtered() -> None:
    p = with_models("route default -> kimi-large\nallow model choice [gemma-27b, kimi-large]\n")
    d = p.evaluate(Action(action="chat", requested_model="gemma-27b", prompt_tokens=9000))
    assert d.routing.chain == ["kimi-large"]
    assert any("dropped gemma-27b: context 8192 < 9000" in b for b in d.rules[-1].because)


# --------------------------------------------------------------------------- standing orders


def test_conditional_authorize_and_deny() -> None:
    p = with_models('authorize refund when amount <= 100 GBP\ndeny refund when tenant == "fraudster"\n')
    assert p.evaluate(Action(action="refund", fields={"amount": "100 GBP"})).effect == "allow"
    d = p.evaluate(Action(action="refund", fields={"amount": "101 GBP"}))
    assert d.effect == "deny" and d.default_applied is False
    assert p.evaluate(Action(action="refund", tenant="fraudster", fields={"amount": "1 GBP"})).effect == "deny"
    # missing field: a permissive rule does not fire
    assert p.evaluate(Action(action="refund")).effect == "deny"


def test_approval_without_block_has_default_obligation() -> None:
    p = with_models("require approval for send_email\n")
    [o] = p.evaluate(Action(action="send_email")).obligations
    assert o.group is None and o.channels == [] and o.on_timeout == "deny" and o.rule_id == "t.policy:6"


def test_hold_block_timeouts() -> None:
    p = with_models('require approval for a {\n  timeout 30m -> approve\n}\n'
                    'require approval for b {\n  notify teams "https://x.example/hook", webhook "https://y.example/h"\n'
                    '  timeout 1d -> escalate to group "managers"\n}\n'
                    "require approval for c {\n  timeout 2h -> escalate\n}\n")
    [a] = p.evaluate(Action(action="a")).obligations
    assert a.on_timeout == "approve" and a.timeout_s == 1800
    [b] = p.evaluate(Action(action="b")).obligations
    assert b.on_timeout == "escalate" and b.escalate_to == "managers" and b.timeout_s == 86400
    assert [c.kind for c in b.channels] == ["teams", "webhook"]
    [c] = p.evaluate(Action(action="c")).obligations
    assert c.on_timeout == "escalate" and c.escalate_to is None


def test_escalate_scoped_to_actions() -> None:
    p = with_models("authorize a, b\nescalate for a when sentiment < 0.3 {\n  reviewers group \"leads\"\n}\n")
    assert p.evaluate(Action(action="a", signals={"sentiment": 0.1})).effect == "escalate"
    assert p.evaluate(Action(action="b", signals={"sentiment": 0.1})).effect == "allow"


def test_verify_scoped_and_unscoped() -> None:
    p = with_models("authorize draft_reply\n"
                    'verify for draft_reply when use_case == "legal" with qwen-72b, gemma-27b {\n'
                    "  escalate when divergence >= 0.3\n}\n")
    d = p.evaluate(Action(action="draft_reply", use_case="legal"))
    assert d.effect == "allow" and d.verification is not None and d.verification.tag is None
    assert p.evaluate(Action(action="draft_reply", use_case="legal", signals={"divergence": 0.3})).effect == "escalate"
    assert p.evaluate(Action(action="draft_reply", use_case="legal", signals={"divergence": 0.29})).tags == []
    assert p.evaluate(Action(action="other", use_case="legal")).verification is None


# --------------------------------------------------------------------------- conditions


def cond(expr: str, **action: Any) -> str:
    p = with_models(f"authorize a when {expr}\nrequire approval for h when {expr}\n")
    allow = p.evaluate(Action(action="a", **action)).effect == "allow"
    held = p.evaluate(Action(action="h", **action)).effect == "require_approval"
    return {(True, True): "true", (False, False): "false", (False, True): "undecidable"}[(allow, held)]


def test_three_valued_logic() -> None:
    f = {"fields": {"amount": "150 GBP"}}
    assert cond("amount > 100 GBP", **f) == "true"
    assert cond("amount > 200 GBP", **f) == "false"
    assert cond("amount > 100 GBP") == "undecidable"
    assert cond("amount > 100 GBP", fields={"amount": "150 USD"}) == "undecidable"
    assert cond("amount > 100 GBP", fields={"amount": 150}) == "undecidable"
    assert cond("amount > 100 GBP and tenant == \"x\"") == "false"  # false and unknown = false
    assert cond("amount > 100 GBP or tenant == \"x\"", tenant="x") == "true"  # true or unknown = true
    assert cond("amount > 100 GBP or tenant == \"x\"") == "undecidable"
    assert cond("not amount > 100 GBP") == "undecidable"
    assert cond("not (amount > 100 GBP)", **f) == "false"


def test_builtin_attributes_absent_are_not_set() -> None:
    assert cond('use_case == "legal"') == "false"
    assert cond('use_case != "legal"') == "true"
    assert cond('use_case in ["legal"]') == "false"
    assert cond('use_case not in ["legal"]') == "true"


def test_field_types_and_conversions() -> None:
    assert cond("count > 3", fields={"count": "4"}) == "true"
    assert cond("count > 3", fields={"count": "many"}) == "undecidable"
    assert cond("waited > 2h", fields={"waited": "3h"}) == "true"
    assert cond("waited > 2h", fields={"waited": 3600}) == "false"
    assert cond("vip == true", fields={"vip": True}) == "true"
    assert cond("vip", fields={"vip": "false"}) == "false"
    assert cond("vip", fields={"vip": 1}) == "true"
    assert cond("customer.tier == \"gold\"", fields={"customer": {"tier": "gold"}}) == "true"
    assert cond("fields.customer.tier == \"gold\"", fields={"customer": {"tier": "silver"}}) == "false"
    assert cond('tags in ["urgent"]', fields={"tags": ["x", "urgent"]}) == "true"
    assert cond("amount >= 100 GBP", fields={"amount": {"amount": "100", "currency": "gbp"}}) == "true"
    assert cond("amount > 100 GBP", fields={"amount": "GBP 100.01"}) == "true"
    assert cond("prompt_tokens > 1000", prompt_tokens=1001) == "true"
    assert cond('text == "hi"', text="hi") == "true"


def test_because_explains_comparisons() -> None:
    p = with_models('require approval for r when amount > 100 GBP and use_case in ["a", "b"] or not vip\n')
    d = p.evaluate(Action(action="r", use_case="a", fields={"amount": "150 GBP", "vip": True}))
    assert d.rules[0].because == ["amount 150 GBP > 100 GBP", 'use_case "a" in ["a", "b"]']
    d = p.evaluate(Action(action="r", use_case="z", fields={"amount": "150 GBP", "vip": False}))
    assert d.rules[0].because == ["not (vip)"]


# --------------------------------------------------------------------------- precedence

KINDS = {
    "deny": "deny x when tenant == \"t\"",
    "escalate": "escalate for x when sentiment < 0.5",
    "require_approval": "require approval for x",
    "authorize": "authorize x",
}


@pytest.mark.parametrize("present", [c for n in range(5) for c in combinations(KINDS, n)])
def test_precedence(present: tuple[str, ...]) -> None:
    p = with_models("".join(KINDS[k] + "\n" for k in present) + "authorize y\n")
    d = p.evaluate(Action(action="x", tenant="t", signals={"sentiment": 0.1}))
    for expected in ("deny", "escalate", "require_approval"):
        if expected in present:
            assert d.effect == expected
            break
    else:
        assert d.effect == ("allow" if "authorize" in present else "deny")
    assert d.default_applied == (not present)
    if "deny" in present:
        assert [h.kind for h in d.rules] == ["deny"]
    if "escalate" in present and "require_approval" in present and "deny" not in present:
        assert len(d.obligations) == 2


# --------------------------------------------------------------------------- signals


class Recorder:
    def __init__(self, sentiment: float = 0.9, confidence: float | None = 0.9, fail: bool = False) -> None:
        self.calls: list[str] = []
        self.s, self.c, self.fail = sentiment, confidence, fail

    def sentiment(self, text: str) -> float:
        self.calls.append("sentiment")
        if self.fail:
            raise RuntimeError("model not loaded")
        return self.s

    def mentions(self, text: str, lexicon: str, phrases: list[str]) -> MentionMatch | None:
        self.calls.append(f"mentions:{lexicon}")
        return None

    def confidence(self, text: str | None, fields: dict) -> float | None:
        self.calls.append("confidence")
        return self.c


SIG = "lexicon lit [\"sue\"]\nauthorize a, b\ndeny d\nescalate for a when sentiment < 0.3 or sentiment > 0.99\nescalate for a when text mentions lit\n"


def test_signals_are_lazy_and_computed_once() -> None:
    p = with_models(SIG)
    r = Recorder()
    p.evaluate(Action(action="b", text="hello"), r)
    assert r.calls == []  # no rule for b needs a signal
    p.evaluate(Action(action="d", text="hello"), r)
    assert r.calls == []  # denied before any signal
    d = p.evaluate(Action(action="a", text="hello"), r)
    assert r.calls == ["sentiment", "mentions:lit"]  # sentiment once for two comparisons
    assert d.signals == {"sentiment": 0.9, "mentions:lit": None}


def test_supplied_signals_win() -> None:
    p = with_models(SIG)
    r = Recorder(sentiment=0.9)
    d = p.evaluate(Action(action="a", text="hello", signals={"sentiment": 0.1, "mentions:lit": None}), r)
    assert r.calls == [] and d.effect == "escalate" and d.signals["sentiment"] == 0.1


def test_broken_provider_and_missing_signals_are_explained() -> None:
    p = with_models(SIG + "escalate for a when confidence < 0.5\n")
    d = p.evaluate(Action(action="a", text="hello"), Recorder(fail=True, confidence=None))
    assert d.effect == "allow"
    assert any("provider failed (RuntimeError)" in n for n in d.notes)
    assert any("confidence not supplied" in n for n in d.notes)
    d = p.evaluate(Action(action="a"))
    assert any("no signal provider" in n for n in d.notes)


# --------------------------------------------------------------------------- identity


def test_content_hash_normalises_line_endings_and_file_order() -> None:
    a, b = MODELS, "authorize x\n"
    h1 = content_hash({"dir/a.policy": a, "dir/b.policy": b})
    assert h1 == content_hash({"b.policy": b.replace("\n", "\r\n"), "a.policy": a + "  \n\n"})
    assert h1 != content_hash({"a.policy": a, "b.policy": "authorize y\n"})
    p = compile_sources({"a.policy": a, "b.policy": b})
    assert p.evaluate(Action(action="x")).policy_hash == p.hash == h1


def test_action_name_is_a_condition_field() -> None:
    p = with_models('escalate when action == "refund" and sentiment < 0.5\nauthorize refund, other\n')
    assert p.evaluate(Action(action="refund", signals={"sentiment": 0.1})).effect == "escalate"
    assert p.evaluate(Action(action="other", signals={"sentiment": 0.1})).effect == "allow"


def test_route_index_compares_non_strings_like_conditions() -> None:
    p = with_models('route default -> qwen-72b\nroute when fields.beta == "true" -> gemma-27b\n'
                    'route when fields.shard == "2" -> kimi-large\n')
    assert p.route(Action(action="chat", fields={"beta": True})).chain[0] == "gemma-27b"
    assert p.route(Action(action="chat", fields={"shard": 2})).chain[0] == "kimi-large"
    assert p.route(Action(action="chat", fields={"shard": 2.0})).chain[0] == "kimi-large"


def test_requesting_the_routed_primary_needs_no_allowlist() -> None:
    p = with_models("route default -> qwen-72b fallback [gemma-27b]\n")
    d = p.evaluate(Action(action="chat", requested_model="qwen-72b"))
    assert d.effect == "allow" and d.routing.chain == ["qwen-72b", "gemma-27b"]
    assert "requested model qwen-72b is the route's own primary" in d.rules[0].because
    assert p.evaluate(Action(action="chat", requested_model="gemma-27b")).effect == "deny"
