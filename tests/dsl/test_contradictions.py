"""W239: conditions no value satisfies, located at the comparison that makes them impossible."""

from __future__ import annotations

from policyengine.dsl import check_sources
from policyengine.dsl.contradictions import contradictions
from policyengine.dsl.parser import parse

POLICY = """policy "t" version 1
model a { provider openai  base_url "http://127.0.0.1:9/v1" }
route default -> a
authorize refund when amount > 100 GBP and amount < 50 GBP
deny export when tier == "gold" and tier == "free"
authorize lookup when region in ["eu", "uk"] and region not in ["eu", "uk"]
authorize ok_point when priority >= 3 and priority <= 3
escalate for triage when priority > 3 or (priority > 5 and priority < 4)
authorize ok_or when priority < 1 or priority > 5
authorize waits when wait > 2h and wait < 30m
authorize hole when priority >= 3 and priority <= 3 and priority != 3
"""


def _w239() -> dict[int, object]:
    return {d.line: d for d in check_sources({"t.policy": POLICY}) if d.code == "W239"}


def test_each_contradiction_at_its_line_and_column() -> None:
    found = _w239()
    assert sorted(found) == [4, 5, 6, 8, 10, 11]  # 7 and 9 are satisfiable
    lines = POLICY.splitlines()
    refund = found[4]
    assert refund.col == lines[3].index("amount < 50") + 1 and refund.severity == "warning"
    assert refund.message == ("no value of `amount` satisfies `amount < 50 GBP` and `amount > 100 GBP`: "
                              "this rule never applies")
    assert refund.hint.startswith("e.g. amount = 101 GBP satisfies `amount > 100 GBP` but not `amount < 50 GBP`")
    # a restrictive rule still fires on a missing value (fail-safe): the message says so
    assert "fires only when `tier` is missing or undecidable" in found[5].message
    assert 'tier = "gold"' in found[5].hint
    assert "this part of the condition is never true" in found[8].message
    assert found[8].col == lines[7].index("priority < 4") + 1
    assert "wait = 7201s" in found[10].hint
    assert "`priority != 3`" in found[11].message and "priority = 3" in found[11].hint


def test_the_example_input_shows_it() -> None:
    """The example value satisfies the earlier comparisons and fails the reported one."""
    from policyengine.dsl import compile_sources
    from policyengine.types import Action

    p = compile_sources({"t.policy": POLICY})
    assert p.evaluate(Action(action="refund", fields={"amount": "101 GBP"})).effect == "deny"  # never authorized
    only_first = compile_sources({"t.policy": POLICY.replace(" and amount < 50 GBP", "")})
    assert only_first.evaluate(Action(action="refund", fields={"amount": "101 GBP"})).effect == "allow"


def test_nothing_reported_for_satisfiable_or_unknown_conditions() -> None:
    e = parse('authorize a when x > 1 and y < 0 and text mentions foo and z != "q"\nlexicon foo ["x"]').items[0].cond
    assert contradictions(e) == []
