"""Where rules of one action meet: W244 (a deny implied by another), W246 (a rule that never
decides: a higher rule always takes it first), I243 (an authorize, deny or approval overlap, with
an example input both hold on; informational, only with `analyze`)."""

from __future__ import annotations

from policyengine.dsl import check_sources, compile_sources
from policyengine.types import Action

POLICY = """policy "t" version 1
deny refund when country == "xx"
deny refund when country == "xx" and amount > 10 GBP
deny refund when country in ["xx", "yy"]
authorize refund when amount < 100 GBP
require approval for refund when amount >= 50 GBP {
  reviewers group "refunds"  notify email "refunds@example.com"  timeout 8h -> deny
}
authorize export when region == "eu" and tier == "free"
deny export when tier == "free"
shadow deny export when region == "eu"
deny wipe
deny wipe
authorize ship when region in ["eu", "uk"]
deny ship when region == "us"
"""


def by_code(code: str, analyze: bool = True) -> dict[int, object]:
    return {d.line: d for d in check_sources({"t.policy": POLICY}, analyze=analyze) if d.code == code}


def test_redundant_deny_at_its_line_with_an_example() -> None:
    found = by_code("W244")
    # line 3 is implied by line 2; line 2 by line 4 (["xx", "yy"] covers "xx"); the second `deny wipe`
    assert sorted(found) == [2, 3, 13]
    d = found[3]
    assert (d.col, d.severity) == (6, "warning")
    assert "the deny at t.policy:2 already refuses `refund`" in d.message
    assert d.hint.startswith('e.g. refund with amount = 11 GBP, country = "xx": both deny')
    assert "t.policy:4" in found[2].message and "always denied at t.policy:12" in found[13].message
    p = compile_sources({"t.policy": POLICY})
    dec = p.evaluate(Action(action="refund", fields={"amount": "11 GBP", "country": "xx"}))
    assert dec.effect == "deny"


def test_rule_that_never_decides() -> None:
    found = by_code("W246", analyze=False)  # a warning: reported by plain lint too
    assert sorted(found) == [9]
    d = found[9]
    assert "the deny at t.policy:10 denies it first" in d.message and d.severity == "warning"
    assert d.hint.startswith('e.g. export with region = "eu", tier = "free"')
    # a shadow deny enforces nothing: it takes nothing from the authorize (no finding for line 11)
    p = compile_sources({"t.policy": POLICY})
    assert p.evaluate(Action(action="export", fields={"region": "eu", "tier": "free"})).effect == "deny"


def test_overlaps_with_an_example_action_only_when_analysing() -> None:
    assert by_code("I243", analyze=False) == {}
    found = [d for d in check_sources({"t.policy": POLICY}, analyze=True) if d.code == "I243"]
    # refund: the authorize (5) meets the approval (6) at amount 50..100 and the first deny (2) where
    # country is "xx"; the approval (6) meets that deny too; ship: no overlap (eu/uk vs us)
    assert sorted((d.line, d.message.split(") and ")[0].split("(line ")[1]) for d in found) == [
        (5, "5"), (6, "5"), (6, "6")]
    [d] = [d for d in found if "authorized (line 5) and held" in d.message]
    assert d.line == 6 and d.severity == "info" and d.col == 22
    assert "`refund` is both authorized (line 5) and held for approval (line 6)" in d.message
    assert "there the require approval decides" in d.message
    assert d.hint.startswith("e.g. refund with amount = 75 GBP")
    p = compile_sources({"t.policy": POLICY})
    # (with `country` supplied: the denies are restrictive, they fire on a missing value)
    held = p.evaluate(Action(action="refund", fields={"amount": "75 GBP", "country": "gb"}))
    assert held.effect == "require_approval"
    deny_meets = [x for x in check_sources({"t.policy": POLICY}, analyze=True)
                  if x.code == "I243" and "denied" in x.message and "authorized (line 5)" in x.message]
    assert deny_meets and 'country = "xx"' in deny_meets[0].hint
    ex = dict(kv.split(" = ") for kv in deny_meets[0].hint.removeprefix("e.g. refund with ").split(";")[0].split(", "))
    action = Action(action="refund", fields={k: v.strip('"') for k, v in ex.items()})
    assert p.evaluate(action).effect == "deny"  # the example: both hold, the deny decides


def test_unattended_approvals_name_an_action_they_hold() -> None:
    src = ('policy "t" version 1\nrequire approval for refund when amount > 100 GBP and tier == "gold"\n'
           "require approval for wipe\n")
    ds = [d for d in check_sources({"t.policy": src}) if d.code in ("W270", "W271", "W272")]
    assert [(d.code, d.line, d.col) for d in ds] == [("W270", 2, 1), ("W271", 2, 1), ("W272", 2, 1),
                                                     ("W270", 3, 1), ("W271", 3, 1), ("W272", 3, 1)]
    assert ds[0].hint.startswith('e.g. refund with amount = 101 GBP, tier = "gold" is held this way; add `reviewers')
    assert ds[3].hint.startswith("e.g. wipe is held this way; add")
    d = compile_sources({"t.policy": src}).evaluate(Action(action="refund", fields={"amount": "101 GBP",
                                                                                     "tier": "gold"}))
    assert d.effect == "require_approval" and d.obligations[0].group is None and d.obligations[0].timeout_s is None
