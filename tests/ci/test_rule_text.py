"""CI's rule descriptions are the formatter's text: one printer of the language."""

from __future__ import annotations

import pytest

from policyengine.ci.rules import rule_text, rules_of
from policyengine.dsl import format_source, parse

MODELS = """model a {
  provider vllm
}
model b {
  provider vllm
}
lexicon legal ["lawsuit", "my lawyer"]
"""

RULES = [
    'authorize refund,   cancel when tenant.tier in ["gold","silver"]',
    "deny bulk_export when rows>10000 and not (user.role == \"admin\")",
    'require approval for refund when amount > £100 {\n reviewers group "refunds"\n notify slack "#r", email "a@b.co"\n'
    ' remind every 2h\n timeout 8h -> escalate to group "leads"\n}',
    "require approval for refund when amount > 500 GBP {}",
    'escalate when text mentions legal or sentiment < 0.3 { reviewers group "legal" }',
    "escalate for delete_account when confidence < 0.5",
    'route when use_case == "legal" -> a fallback [b] sticky session return on recovery',
    "route default -> b prefer self_hosted",
    'allow model choice [a, b] when user.role == "power"',
    'verify for chat when use_case == "legal" with a, b {\n escalate when divergence > 0.2 otherwise tag "agreed"\n'
    ' reviewers group "legal"\n}',
]


def _one_line(formatted: str) -> str:
    """The formatter's block layout (`head {`, two-space-indented items, `}`) on one line."""
    lines = formatted.rstrip("\n").split("\n")
    if len(lines) == 1:
        return lines[0]
    assert lines[0].endswith(" {") and lines[-1] == "}"
    items = [ln.removeprefix("  ") for ln in lines[1:-1]]
    return lines[0].removesuffix(" {") + " { " + "".join(f"{i}  " for i in items).rstrip() + (" }" if items else "}")


@pytest.mark.parametrize("rule", RULES)
def test_ci_rule_text_is_the_formatters_text(rule: str) -> None:
    src = MODELS + rule + "\n"
    (info,) = rules_of([parse(src, "r.policy")])
    formatted = format_source(rule + "\n")
    assert info.text == _one_line(formatted)
    # and it is valid policy text that formats back to the formatter's layout
    assert format_source(info.text + "\n") == formatted
    assert rule_text(info.node) == info.text


def test_rule_text_refuses_declarations() -> None:
    model = parse(MODELS, "m.policy").items[0]
    with pytest.raises(TypeError, match="not a rule"):
        rule_text(model)
