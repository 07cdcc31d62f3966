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
from policyengine.dsl.printer import expr as expr_text

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


def _names(ns: tuple[ast.Name, ...] | None) -> str:
    return ", ".join(n.value for n in ns or ())


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def hold_text(items: tuple[ast.HoldItem, ...] | None) -> str:
    parts: list[str] = []
    for h in items or ():
        if h.kind == "reviewers":
            parts.append(f"reviewers group {_q(h.group or '')}")
        elif h.kind == "notify":
            parts.append("notify " + ", ".join(f"{c.kind} {_q(c.target)}" for c in h.channels))
        elif h.kind == "remind":
            parts.append(f"remind every {h.raw}")
        elif h.kind == "timeout":
            out = h.outcome or "deny"
            if out == "escalate" and h.group:
                out += f" to group {_q(h.group)}"
            parts.append(f"timeout {h.raw} -> {out}")
    return "{ " + "  ".join(parts) + " }" if parts else ""


def route_text(r: ast.Route) -> str:
    head = "route default" if r.cond is None else f"route when {expr_text(r.cond)}"
    s = f"{head} -> {r.primary.value}"
    if r.fallback is not None:
        s += f" fallback [{_names(r.fallback)}]"
    if r.sticky:
        s += " sticky session" + (" return on recovery" if r.sticky_return else "")
    if r.prefer_self_hosted:
        s += " prefer self_hosted"
    return s


def rule_text(node: Any) -> str:
    """Canonical one-line source for a rule node."""
    when = f" when {expr_text(node.cond)}" if getattr(node, "cond", None) is not None else ""
    if isinstance(node, ast.Route):
        return route_text(node)
    if isinstance(node, ast.AllowChoice):
        return f"allow model choice [{_names(node.models)}]{when}"
    if isinstance(node, ast.Authorize):
        return f"authorize {_names(node.actions)}{when}"
    if isinstance(node, ast.Deny):
        return f"deny {_names(node.actions)}{when}"
    if isinstance(node, ast.RequireApproval):
        hold = hold_text(node.hold)
        return f"require approval for {_names(node.actions)}{when}" + (f" {hold}" if hold else "")
    if isinstance(node, ast.Escalate):
        scope = f" for {_names(node.actions)}" if node.actions else ""
        hold = hold_text(node.hold)
        return f"escalate{scope}{when}" + (f" {hold}" if hold else "")
    if isinstance(node, ast.Verify):
        scope = f" for {_names(node.actions)}" if node.actions else ""
        inner = f"escalate when {expr_text(node.escalate)}"
        if node.tag:
            inner += f" otherwise tag {_q(node.tag)}"
        hold = hold_text(node.hold)
        if hold:
            inner += " " + hold[2:-2]
        return f"verify{scope}{when} with {_names(node.models)} {{ {inner} }}"
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
