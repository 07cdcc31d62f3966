"""`limit` and `budget`: parsed, checked, formatted, compiled; the evaluator lists them and `at_limit`."""

from __future__ import annotations

import pytest

from policyengine.dsl import check_sources, compile_sources, parse
from policyengine.dsl.formatter import format_source
from policyengine.ir import MICRO
from policyengine.types import Action

MODELS = '''policy "lim" version 1
model local { provider vllm base_url env("LOCAL_URL") cost 0 }
model cloud { provider openai base_url env("CLOUD_URL") cost 0.5 GBP per 1k tokens }
model other { provider openai base_url env("OTHER_URL") cost 2 per 1m tokens }
route default -> cloud fallback [local]
'''

GOOD = MODELS + '''
limit requests 60 per minute per user
limit tokens 100000 per hour per key, model on model cloud
budget 50 GBP per day per tenant when use_case == "chat" {
  at 80% notify email "ops@example.com"  # notice once per window
  at 100% prefer self_hosted
  on outage fail open
}
budget £5 per 2s per tenant, use_case {
  at 90% require approval group "finance"
}
'''


def codes(src: str) -> list[str]:
    return [d.code for d in check_sources({"lim.policy": src})]


def test_good_set_is_clean_and_formats_to_a_fixed_point() -> None:
    assert [c for c in codes(GOOD) if c.startswith("E")] == []
    text = format_source(GOOD)
    assert format_source(text) == text
    assert parse(text).items == parse(GOOD).items
    assert "cost 0.5 GBP per 1k tokens" in text and "budget 5 GBP per 2s per tenant, use_case {" in text
    assert "  at 90% require approval group \"finance\"" in text


def test_compiled_limits() -> None:
    p = compile_sources({"lim.policy": GOOD})
    req, tok, day, short = p.limits
    assert (req.kind, req.amount, req.window_s, req.scope, req.fail_open) == ("requests", 60, 60, ("user",), True)
    assert tok.models == frozenset({"cloud"}) and tok.scope == ("key", "model")
    assert (day.kind, day.amount, day.currency, day.window_s) == ("spend", 50 * MICRO, "GBP", 86400)
    assert (day.on_limit, day.fail_open, day.notify[0][0]) == ("prefer_self_hosted", True, 80.0)
    assert short.fail_open is False and short.window_s == 2 and short.cap == int(5 * MICRO * 0.9)
    assert p.models["cloud"].cost_currency == "GBP" and p.models["other"].cost_currency is None


def test_evaluator_lists_the_limits_that_apply() -> None:
    p = compile_sources({"lim.policy": GOOD})
    d = p.evaluate(Action(action="chat", tenant="acme", actor="bob", use_case="chat"))
    assert [h.rule_id for h in d.limits] == ["lim.policy:7", "lim.policy:8", "lim.policy:9", "lim.policy:14"]
    d2 = p.evaluate(Action(action="chat", tenant="acme", use_case="batch"))
    assert "lim.policy:9" not in [h.rule_id for h in d2.limits]  # its condition is false
    refund = p.evaluate(Action(action="refund", tenant="acme"))
    assert refund.limits == []  # limits count model calls only


def test_at_limit_deny_reroute_and_approval() -> None:
    p = compile_sources({"lim.policy": GOOD})
    a = Action(action="chat", tenant="acme", actor="bob", use_case="chat")
    d = p.evaluate(a)
    by = {h.rule_id: h for h in d.limits}
    denied = p.at_limit(d, [(by["lim.policy:7"], "requests 60 of 60 per minute")], a)
    assert denied.effect == "deny" and denied.rules[-1].kind == "limit" and denied.rules[-1].effect == "deny"
    rerouted = p.at_limit(d, [(by["lim.policy:9"], "spend 50 GBP of 50 GBP per day")], a)
    assert rerouted.effect == "allow" and rerouted.routing.chain == ["local"]
    # the rerouted call is no longer counted by the budget, nor by the limit `on model cloud`
    assert [h.rule_id for h in rerouted.limits] == ["lim.policy:7", "lim.policy:14"]
    held = p.at_limit(d, [(by["lim.policy:14"], "spend 4.5 GBP of 5 GBP per 2s")], a)
    assert held.effect == "require_approval" and held.obligations[-1].group == "finance"
    assert p.at_limit(d, [], a) is d


@pytest.mark.parametrize(("body", "code"), [
    ("limit requests 0 per minute", "E280"),
    ("budget 0 GBP per day", "E280"),
    ("limit requests 10 per fortnight", "E281"),
    ("limit requests 10 per minit", "E281"),
    ("limit requests 10 per 500ms", "E281"),
    ("limit requests 10 per 0s", "E281"),
    ("limit requests 10 per minute per usr", "E282"),
    ("limit requests 10 per minute on model clowd", "E210"),
    ("budget 5 GBP per day on model local", "E283"),
    ("budget 5 USD per day on model cloud", "E284"),
    ("budget 5 USD per day", "E284"),
    ("budget 5 GBP per day on model cloud\nbudget 5 EUR per day on model other", "E284"),
    ("limit requests 5 per minute { at 80% deny  at 100% deny }", "E285"),
    ("limit requests 5 per minute { at 0% notify email \"a@b.co\" }", "E285"),
    ("limit requests 5 per minute { at 120% notify email \"a@b.co\" }", "W286"),
    ("limit requests 5 per minute { at 80% notify email \"nobody\" }", "E237"),
    ("budget 5 GBP per minute on model cloud", "W288"),
    ("limit requests 5 per minute when tenant.tiers == \"x\"", "E222"),
])
def test_checker(body: str, code: str) -> None:
    assert code in codes(MODELS + body + "\n")


def test_reroute_needs_a_cost_0_model() -> None:
    src = '''policy "p" version 1
model cloud { provider openai base_url env("C") cost 1 GBP per 1k tokens }
route default -> cloud
budget 5 GBP per day { at 100% prefer self_hosted }
'''
    assert "E289" in codes(src)


def test_syntax_error_is_located() -> None:
    diags = check_sources({"lim.policy": MODELS + "limit calls 5 per minute\n"})
    assert diags[0].code == "E100" and diags[0].line == 6
