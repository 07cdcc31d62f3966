"""The rules of a policy set, read from its syntax tree: what coverage and diff count.

A rule is a statement that can decide something: `route`, `allow model choice`,
`authorize`, `require approval`, `deny`, `escalate`, `verify`. Declarations
(`policy`, `model`, `lexicon`) are not rules. Each rule is identified by where it
is written (file:line, as in `RuleHit.span`) and described by canonical text
rebuilt from the tree, so two versions compare equal when they say the same thing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from policyengine.dsl import ast
from policyengine.dsl.formatter import format_item, hold_item
from policyengine.dsl.parser import parse

RULE_TYPES: dict[type, str] = {
    ast.Route: "route",
    ast.AllowChoice: "allow_choice",
    ast.Authorize: "authorize",
    ast.RequireApproval: "require_approval",
    ast.Deny: "deny",
    ast.Escalate: "escalate",
    ast.Verify: "verify",
    ast.Limit: "limit",
}


@dataclass(frozen=True)
class RuleInfo:
    """One rule of a policy set: its kind (a RULE_TYPES value), where it is written, its
    canonical one-line text, the actions it names, and its syntax-tree node."""

    kind: str
    file: str
    line: int
    text: str  # canonical one-line text
    actions: tuple[str, ...] | None  # named actions; None: every action (or every model call, for routes)
    node: Any = None

    @property
    def location(self) -> str:
        """`file:line`."""
        return f"{self.file}:{self.line}"


def hold_text(items: tuple[ast.HoldItem, ...] | None) -> str:
    """A hold block on one line (`{ item  item }`, as the formatter prints it), or "" when
    it has no items."""
    parts = [hold_item(h) for h in items or ()]
    return "{ " + "  ".join(parts) + " }" if parts else ""


def rule_text(node: Any) -> str:
    """Canonical one-line source for a rule node: the formatter's text, a block's items
    on the statement's line (`format_item(node, one_line=True)`)."""
    if type(node) not in RULE_TYPES:
        raise TypeError(f"not a rule: {type(node).__name__}")
    return format_item(node, one_line=True)


def rule_actions(node: Any) -> tuple[str, ...] | None:
    """The actions a rule names; None for routes, model choices and rules without `for`."""
    if isinstance(node, ast.Route | ast.AllowChoice | ast.Limit):
        return None
    acts = getattr(node, "actions", None)
    return tuple(n.value for n in acts) if acts else None


def rules_of(files: list[ast.PolicyFile]) -> list[RuleInfo]:
    """Every rule of a parsed policy set, in file then source order."""
    out: list[RuleInfo] = []
    for pf in files:
        for item in pf.items:
            kind = RULE_TYPES.get(type(item))
            if kind is None:
                continue
            span = item.span
            out.append(RuleInfo(kind=kind, file=span.file if span.file != "<none>" else pf.path,
                                line=span.line, text=rule_text(item), actions=rule_actions(item), node=item))
    return out


def parse_sources(sources: dict[str, str]) -> list[ast.PolicyFile]:
    """Each source {file: text} parsed, in order. PolicyError on a syntax error."""
    return [parse(text, file=name) for name, text in sources.items()]


_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|£?\$?€?-?\b[0-9][0-9_]*(?:\.[0-9]+)?(?:\s*[A-Z]{3}\b|ms|s|m|h|d)?')


def shape(text: str) -> str:
    """The text with literals erased: `amount > 100 GBP` and `amount > 50 GBP` have one shape."""
    return _LITERAL.sub("?", text)
