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

from policyengine.dsl import ast, printer
from policyengine.dsl.parser import escape

RULE_TYPES: dict[type, str] = {
    ast.Route: "route",
    ast.AllowChoice: "allow_choice",
    ast.Authorize: "authorize",
    ast.RequireApproval: "require_approval",
    ast.Deny: "deny",
    ast.Escalate: "escalate",
    ast.Verify: "verify",
}


@dataclass(frozen=True)
class RuleInfo:
    kind: str
    file: str
    line: int
    text: str  # canonical one-line text
    actions: tuple[str, ...] | None  # named actions; None: every action (or every model call, for routes)
    node: Any = None

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}"


def hold_text(items: tuple[ast.HoldItem, ...] | None) -> str:
    """A hold block on one line (`{ item  item }`), or "" when it has no items."""
    parts = [printer.hold_item(h) for h in items or ()]
    return "{ " + "  ".join(parts) + " }" if parts else ""


def rule_text(node: Any) -> str:
    """Canonical one-line source for a rule node (the formatter's text, blocks on one line)."""
    when = printer.when(getattr(node, "cond", None))
    if isinstance(node, ast.Route):
        return printer.route(node)
    if isinstance(node, ast.AllowChoice):
        return f"allow model choice [{printer.names(node.models)}]{when}"
    if isinstance(node, ast.Authorize):
        return f"authorize {printer.names(node.actions)}{when}"
    if isinstance(node, ast.Deny):
        return f"deny {printer.names(node.actions)}{when}"
    if isinstance(node, ast.RequireApproval):
        hold = hold_text(node.hold)
        return f"require approval for {printer.names(node.actions)}{when}" + (f" {hold}" if hold else "")
    if isinstance(node, ast.Escalate):
        scope = f" for {printer.names(node.actions)}" if node.actions else ""
        hold = hold_text(node.hold)
        return f"escalate{scope}{when}" + (f" {hold}" if hold else "")
    if isinstance(node, ast.Verify):
        scope = f" for {printer.names(node.actions)}" if node.actions else ""
        inner = f"escalate when {printer.expr(node.escalate)}"
        if node.tag:
            inner += f" otherwise tag {escape(node.tag)}"
        hold = hold_text(node.hold)
        if hold:
            inner += " " + hold[2:-2]
        return f"verify{scope}{when} with {printer.names(node.models)} {{ {inner} }}"
    raise TypeError(f"not a rule: {type(node).__name__}")


def rule_actions(node: Any) -> tuple[str, ...] | None:
    if isinstance(node, ast.Route | ast.AllowChoice):
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
    from policyengine.dsl.parser import parse

    return [parse(text, file=name) for name, text in sources.items()]


_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|£?\$?€?-?\b[0-9][0-9_]*(?:\.[0-9]+)?(?:\s*[A-Z]{3}\b|ms|s|m|h|d)?')


def shape(text: str) -> str:
    """The text with literals erased: `amount > 100 GBP` and `amount > 50 GBP` have one shape."""
    return _LITERAL.sub("?", text)
