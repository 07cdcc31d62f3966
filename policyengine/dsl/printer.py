"""Canonical text for conditions and literals (shared by the formatter and explanations)."""

from __future__ import annotations

from . import ast


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
