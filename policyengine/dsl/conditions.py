"""Conditions -> closures with three-valued (Kleene) logic.

A compiled condition is `fn(ctx, because) -> True | False | None`. `None` means
"cannot be decided" (an action field is missing, a currency differs, a value has
the wrong type). Each rule decides what `None` means for it: restrictive rules
(deny, require approval, escalate, verify) fire on `None` (fail-safe: hold rather
than let through); permissive ones (authorize, routes, model choice) do not.
Leaves append a human-readable comparison to `because` when they are true or
undecidable, e.g. `sentiment 0.21 < 0.3`, `amount 150 USD vs 100 GBP: currency mismatch`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from decimal import Decimal
from functools import partial
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from policyengine.types import parse_money

from . import ast, printer
from .fields import BUILTIN_ATTR, MISSING, classify, field_getter
from .parser import canonical_decimal, parse_duration

if TYPE_CHECKING:
    from policyengine.evaluator import EvalContext

Cond = Callable[["EvalContext", list[str]], "bool | None"]

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def show(v: Any) -> str:
    if isinstance(v, str):
        return printer_str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, Decimal):
        return canonical_decimal(v)
    if isinstance(v, dict) and set(v) == {"amount", "currency"}:
        return f"{v['amount']} {v['currency']}"
    return str(v)


def printer_str(s: str) -> str:
    return '"' + s.replace('"', '\\"') + '"'


as_money = parse_money  # one money reader for the language, the runtime and replay


def as_number(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return None
    return None


def as_seconds(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int | float | Decimal):
        return float(v)
    if isinstance(v, str):
        try:
            return float(parse_duration(v))
        except ValueError:
            n = as_number(v)
            return n
    return None


def as_bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return None


def _getter(path: str) -> tuple[str, Callable[[EvalContext], Any]]:
    kind, key = classify(path)
    if kind == "builtin":
        read = attrgetter("action." + BUILTIN_ATTR[key])

        def builtin(ctx: EvalContext) -> Any:
            v = read(ctx)
            return MISSING if v is None else v

        return kind, builtin
    if kind == "signal":
        return kind, partial(_signal, key=key)
    fg = field_getter(key)
    return kind, lambda ctx: fg(ctx.action)


def _signal(ctx: EvalContext, key: str) -> Any:
    return ctx.signal(key)


def _missing(kind: str, path: str, because: list[str], negated: bool = False) -> bool | None:
    """What a missing value means: action fields -> undecidable; built-in attributes -> not set
    (so `==`/`in` are false and `!=`/`not in` true); signals -> false (rule does not fire)."""
    if kind == "field":
        because.append(f"{path} not supplied (undecidable)")
        return None
    if negated and kind == "builtin":
        because.append(f"{path} not set")
        return True
    return False


def compile_expr(e: ast.Expr, lexicons: dict[str, Any] | None = None) -> Cond:
    if isinstance(e, ast.And):
        parts = [compile_expr(x, lexicons) for x in e.items]

        def and_(ctx: EvalContext, because: list[str]) -> bool | None:
            unknown = False
            mine: list[str] = []
            for p in parts:
                r = p(ctx, mine)
                if r is False:
                    return False  # nothing of a false conjunction explains anything
                if r is None:
                    unknown = True
            because.extend(mine)
            return None if unknown else True

        return and_
    if isinstance(e, ast.Or):
        parts = [compile_expr(x, lexicons) for x in e.items]

        def or_(ctx: EvalContext, because: list[str]) -> bool | None:
            undecided: list[str] = []
            unknown = False
            for p in parts:
                mine: list[str] = []
                r = p(ctx, mine)
                if r is True:
                    because.extend(mine)  # the branch that made it true
                    return True
                if r is None:
                    unknown = True
                    undecided.extend(mine)
            if unknown:
                because.extend(undecided)
                return None
            return False

        return or_
    if isinstance(e, ast.Not):
        inner = compile_expr(e.item, lexicons)
        text = printer.expr(e.item)

        def not_(ctx: EvalContext, because: list[str]) -> bool | None:
            scratch: list[str] = []
            r = inner(ctx, scratch)
            if r is None:
                because.extend(scratch)
                return None
            if r is False:
                because.append(f"not ({text})")
                return True
            return False

        return not_
    if isinstance(e, ast.Cmp):
        return _compile_cmp(e)
    if isinstance(e, ast.In):
        return _compile_in(e)
    if isinstance(e, ast.Truthy):
        kind, get = _getter(e.path.value)
        path = e.path.value

        def truthy(ctx: EvalContext, because: list[str]) -> bool | None:
            v = get(ctx)
            if v is MISSING:
                return _missing(kind, path, because)
            b = as_bool(v)
            if b is None:
                b = bool(v)
            if b:
                because.append(f"{path} is {show(v)}")
            return b

        return truthy
    if isinstance(e, ast.Mentions):
        path = e.path.value
        lex = e.lexicon.value
        kind, get = _getter(path)

        def mentions(ctx: EvalContext, because: list[str]) -> bool | None:
            v = get(ctx)
            text = v if isinstance(v, str) else None
            found = ctx.mention(lex, text, path)
            if found:
                because.append(f"{path} mentions {lex} ({found})")
                return True
            return False

        return mentions
    raise TypeError(f"not an expression: {e!r}")


def _compile_cmp(e: ast.Cmp) -> Cond:
    path, opname, lit = e.path.value, e.op, e.value
    op = OPS[opname]
    kind, get = _getter(path)
    raw = lit.raw

    if lit.kind == "money":
        lamount, lcur = lit.value  # type: ignore[misc]

        def cmp_money(ctx: EvalContext, because: list[str]) -> bool | None:
            v = get(ctx)
            if v is MISSING:
                return _missing(kind, path, because)
            m = as_money(v)
            if m is None:
                because.append(f"{path} {show(v)} is not an amount with a currency; compared with {raw} (undecidable)")
                return None
            amount, cur = m
            if cur != lcur:
                because.append(
                    f"{path} {canonical_decimal(amount)} {cur} {opname} {raw}: currency mismatch "
                    f"({cur} vs {lcur}), not converted (undecidable)"
                )
                return None
            r = op(amount, lamount)
            if r:
                because.append(f"{path} {canonical_decimal(amount)} {cur} {opname} {raw}")
            return r

        return cmp_money

    if lit.kind == "str":
        sval = lit.value

        negated = opname == "!="

        def cmp_str(ctx: EvalContext, because: list[str]) -> bool | None:
            v = get(ctx)
            if v is MISSING:
                return _missing(kind, path, because, negated)
            if not isinstance(v, str):
                v = show(v)
            try:
                r = op(v, sval)
            except TypeError:  # pragma: no cover - both are str
                return None
            if r:
                because.append(f"{path} {show(v)} {opname} {raw}")
            return r

        return cmp_str

    if lit.kind == "bool":
        bval = lit.value

        def cmp_bool(ctx: EvalContext, because: list[str]) -> bool | None:
            v = get(ctx)
            if v is MISSING:
                return _missing(kind, path, because)
            b = as_bool(v)
            if b is None:
                because.append(f"{path} {show(v)} is not a boolean (undecidable)")
                return None
            r = op(b, bval)
            if r:
                because.append(f"{path} {show(b)} {opname} {raw}")
            return r

        return cmp_bool

    conv = as_seconds if lit.kind == "duration" else as_number
    nval = float(lit.value)  # type: ignore[arg-type]
    what = "a duration" if lit.kind == "duration" else "a number"

    def cmp_num(ctx: EvalContext, because: list[str]) -> bool | None:
        v = get(ctx)
        if v is MISSING:
            return _missing(kind, path, because)
        tv = type(v)
        n = v if tv is float or tv is int else conv(v)
        if n is None:
            because.append(f"{path} {show(v)} is not {what} (undecidable)")
            return None
        r = op(n, nval)
        if r:
            because.append(f"{path} {show(v)} {opname} {raw}")
        return r

    return cmp_num


def _compile_in(e: ast.In) -> Cond:
    path = e.path.value
    kind, get = _getter(path)
    neg = e.negated
    listing = printer.values(e.values)
    word = "not in" if neg else "in"
    strs = frozenset(v.value for v in e.values if v.kind == "str")
    nums = frozenset(float(v.value) for v in e.values if v.kind in ("num", "duration"))  # type: ignore[arg-type]
    moneys = frozenset(v.value for v in e.values if v.kind == "money")
    bools = frozenset(v.value for v in e.values if v.kind == "bool")

    def member(v: Any) -> bool | None:
        if isinstance(v, str):
            if v in strs:
                return True
            if nums and (n := as_number(v)) is not None and n in nums:
                return True
            return bool(moneys) and (m := as_money(v)) is not None and m in moneys
        if isinstance(v, bool):
            return v in bools
        n = as_number(v)
        if n is not None:
            return n in nums or show(v) in strs
        m = as_money(v)
        if m is not None:
            return m in moneys
        return None

    def in_(ctx: EvalContext, because: list[str]) -> bool | None:
        v = get(ctx)
        if v is MISSING:
            return _missing(kind, path, because, neg)
        if isinstance(v, list | tuple | set | frozenset):
            # a list-valued field: in = any element is a member
            found = [x for x in v if member(x)]
            hit = bool(found)
        else:
            m = member(v)
            if m is None:
                because.append(f"{path} {show(v)} cannot be compared with {listing} (undecidable)")
                return None
            hit = m
        r = hit != neg
        if r:
            because.append(f"{path} {show(v)} {word} {listing}")
        return r

    return in_
