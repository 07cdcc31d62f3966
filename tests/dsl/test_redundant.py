"""W233: an authorize that only fires when an earlier authorize of the same action already does."""

from __future__ import annotations

from policyengine.dsl import check_sources, compile_sources
from policyengine.dsl.contradictions import witness
from policyengine.dsl.parser import parse
from policyengine.types import Action

POLICY = """policy "t" version 1
model a { provider openai  base_url "http://127.0.0.1:9/v1" }
route default -> a
authorize refund when tier == "gold"
authorize refund when tier == "gold" and amount < 50 GBP
authorize refund when amount < 20 GBP
authorize lookup
authorize lookup when region in ["eu"]
authorize ship when region in ["eu", "uk"]
authorize ship when region == "eu" and express == true
shadow authorize ship when region == "eu"
"""


def test_redundant_authorize_at_its_line_with_an_example() -> None:
    found = {d.line: d for d in check_sources({"t.policy": POLICY}) if d.code == "W233"}
    assert sorted(found) == [5, 8, 10]  # line 6 is not implied; a shadow rule is not checked
    d = found[5]
    assert (d.col, d.severity) == (11, "warning")
    assert "authorize at t.policy:4 already allows `refund`" in d.message
    assert d.hint.startswith('e.g. refund with amount = 49 GBP, tier = "gold": both hold')
    # the example input: both rules hold, the earlier one is the rule that allowed it
    p = compile_sources({"t.policy": POLICY})
    dec = p.evaluate(Action(action="refund", fields={"amount": "49 GBP", "tier": "gold"}))
    assert dec.effect == "allow" and [h.rule_id for h in dec.rules if h.kind == "authorize"] == ["t.policy:4"]
    assert 'region = "eu", express = true' in found[10].hint


def test_witness_satisfies_the_condition_or_is_none() -> None:
    def cond(text: str):
        return parse(f"authorize x when {text}").items[0].cond

    assert witness(cond('a > 3 and a <= 10 and b != "z" and c in ["p", "q"]')) == {"a": "6.5", "b": '"other"',
                                                                                  "c": '"p"'}
    assert witness(cond("a > 3 and a < 2")) is None
    assert witness(cond("a > 3 or b == 1")) is None
