"""Canonical text for conditions, literals and rule parts (shared by the formatter,
explanations and CI's rule descriptions)."""

from __future__ import annotations

from . import ast
from .parser import escape


def expr(e: ast.Expr) -> str:
    if isinstance(e, ast.Or):
        return " or ".join(expr(x) for x in e.items)
    if isinstance(e, ast.And):
        return " and ".join(f"({expr(x)})" if isinstance(x, ast.Or) else expr(x) for x in e.items)
    if isinstance(e, ast.Not):
        inner = e.item
        s = expr(inner)
        return f"not ({s})" if isinstance(inner, ast.And | ast.Or) else f"not {s}"
    if isinstance(e, ast.Cmp):
        return f"{e.path.value} {e.op} {e.value.raw}"
    if isinstance(e, ast.In):
        return f"{e.path.value} {'not in' if e.negated else 'in'} {values(e.values)}"
    if isinstance(e, ast.Mentions):
        return f"{e.path.value} mentions {e.lexicon.value}"
    if isinstance(e, ast.Truthy):
        return e.path.value
    raise TypeError(f"not an expression: {e!r}")


def values(vs: tuple[ast.Value, ...]) -> str:
    return "[" + ", ".join(v.raw for v in vs) + "]"


def names(ns: tuple[ast.Name, ...] | None) -> str:
    return ", ".join(n.value for n in ns or ())


def when(cond: ast.Expr | None) -> str:
    """` when <cond>`, or nothing without a condition."""
    return f" when {expr(cond)}" if cond is not None else ""


def route(r: ast.Route) -> str:
    head = "route default" if r.cond is None else f"route when {expr(r.cond)}"
    out = f"{head} -> {r.primary.value}"
    if r.fallback is not None:
        out += f" fallback [{names(r.fallback)}]"
    if r.sticky:
        out += " sticky session" + (" return on recovery" if r.sticky_return else "")
    if r.prefer_self_hosted:
        out += " prefer self_hosted"
    return out


def hold_item(h: ast.HoldItem) -> str:
    """One item of an approval/escalation hold block."""
    if h.kind == "reviewers":
        return f"reviewers group {escape(h.group or '')}"
    if h.kind == "notify":
        return "notify " + ", ".join(f"{c.kind} {escape(c.target)}" for c in h.channels)
    if h.kind == "remind":
        return f"remind every {h.raw}"
    out = f"timeout {h.raw} -> {h.outcome}"
    if h.outcome == "escalate" and h.group is not None:
        out += f" to group {escape(h.group)}"
    return out
