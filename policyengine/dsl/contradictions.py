"""Conditions no value can satisfy: `amount > 100 GBP and amount < 50 GBP`, `tier == "gold" and
tier == "free"`, `region in ["eu"] and region not in ["eu", "uk"]`.

`contradictions(e)` looks at every conjunction of `e` (the whole condition, or an `and` inside an
`or` / `not`) and, per field, at its comparisons with literals: numbers, money of one currency
and durations as intervals; strings and booleans as sets of allowed / excluded values. It reports
the first comparison that leaves a field no possible value, with the earlier ones it contradicts
and a value that satisfies those but not it (the example). Only literal comparisons are read;
anything else (mentions, truthiness, comparisons in other currencies) never counts as a
contradiction: a clean result proves nothing, a reported one is certain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from . import ast
from . import formatter as fmt
from .parser import canonical_decimal


@dataclass(frozen=True)
class Contradiction:
    """`atom` can never hold together with `earlier` (comparisons of the same field, in the same
    conjunction); `example` is a value of the field that satisfies `earlier` (None: none does
    either), `whole` is true when the conjunction is the rule's entire condition."""

    path: str
    atom: ast.Expr
    earlier: tuple[ast.Expr, ...]
    example: str | None
    whole: bool


@dataclass
class _Range:
    lo: Decimal | None = None
    lo_strict: bool = False
    hi: Decimal | None = None
    hi_strict: bool = False
    ne: set[Decimal] = field(default_factory=set)

    def add(self, op: str, v: Decimal) -> None:
        if op in (">", ">=", "=="):
            strict = op == ">"
            if self.lo is None or v > self.lo or (v == self.lo and strict):
                self.lo, self.lo_strict = v, strict
        if op in ("<", "<=", "=="):
            strict = op == "<"
            if self.hi is None or v < self.hi or (v == self.hi and strict):
                self.hi, self.hi_strict = v, strict
        if op == "!=":
            self.ne.add(v)

    def empty(self) -> bool:
        """No value lies in the range: the bounds cross, or meet where one is strict or excluded."""
        if self.lo is None or self.hi is None:
            return False
        return self.lo > self.hi or (self.lo == self.hi and (self.lo_strict or self.hi_strict or self.lo in self.ne))

    def example(self) -> Decimal | None:
        """A value inside the range (None when it is empty)."""
        if self.empty():
            return None
        if self.lo is None and self.hi is None:
            v = Decimal(0)
        elif self.lo is None:
            v = self.hi - 1 if self.hi_strict or self.hi in self.ne else self.hi  # type: ignore[operator]
        elif self.hi is None:
            v = self.lo + 1 if self.lo_strict or self.lo in self.ne else self.lo
        else:
            v = (self.lo + self.hi) / 2 if (self.lo_strict or self.hi_strict) else self.lo
        while v in self.ne:
            v += Decimal("0.5")
        return v


@dataclass
class _Set:
    allowed: set[Any] | None = None  # None: any value
    excluded: set[Any] = field(default_factory=set)

    def add_in(self, vals: set[Any]) -> None:
        self.allowed = set(vals) if self.allowed is None else self.allowed & vals

    def empty(self) -> bool:
        return self.allowed is not None and not (self.allowed - self.excluded)


def _key(v: ast.Value) -> tuple[str, Any] | None:
    """(domain, comparable value) of a literal: numbers, money per currency, durations, strings, booleans."""
    if v.kind == "num":
        return "num", v.value
    if v.kind == "money":
        amount, cur = v.value  # type: ignore[misc]
        return f"money {cur}", amount
    if v.kind == "duration":
        return "duration", v.value
    if v.kind in ("str", "bool"):
        return v.kind, v.value
    return None


def _show(domain: str, v: Any) -> str:
    if domain.startswith("money "):
        return f"{canonical_decimal(v)} {domain[6:]}"
    if domain == "duration":
        return f"{canonical_decimal(v)}s"
    if domain == "str":
        return f'"{v}"'
    if domain == "bool":
        return "true" if v else "false"
    return canonical_decimal(v) if isinstance(v, Decimal) else str(v)


def text(e: ast.Expr) -> str:
    """A comparison as written (canonical)."""
    return fmt.expr(e)


def _conjunctions(e: ast.Expr, whole: bool = True) -> list[tuple[tuple[ast.Expr, ...], bool]]:
    out: list[tuple[tuple[ast.Expr, ...], bool]] = []
    if isinstance(e, ast.And):
        out.append((e.items, whole))
        for x in e.items:
            out.extend(_conjunctions(x, False))
    elif isinstance(e, ast.Or):
        for x in e.items:
            out.extend(_conjunctions(x, False))
    elif isinstance(e, ast.Not):
        out.extend(_conjunctions(e.item, False))
    return out


def _check(items: tuple[ast.Expr, ...], whole: bool) -> Contradiction | None:
    ranges: dict[tuple[str, str], _Range] = {}
    sets: dict[tuple[str, str], _Set] = {}
    seen: dict[tuple[str, str], list[ast.Expr]] = {}
    for a in items:
        if isinstance(a, ast.Cmp):
            k = _key(a.value)
            if k is None:
                continue
            domain, v = k
            slot = (a.path.value, domain)
            if domain in ("str", "bool"):
                if a.op not in ("==", "!="):
                    continue
                s = sets.setdefault(slot, _Set())
                before = (set(s.allowed) if s.allowed is not None else None, set(s.excluded))
                if a.op == "==":
                    s.add_in({v})
                else:
                    s.excluded.add(v)
                example = _example_set(before)
                bad = s.empty()
            else:
                r = ranges.setdefault(slot, _Range())
                before_r = _Range(r.lo, r.lo_strict, r.hi, r.hi_strict, set(r.ne))
                r.add(a.op, v)
                ex = before_r.example()
                example = None if ex is None else _show(domain, ex)
                bad = r.empty()
        elif isinstance(a, ast.In):
            keys = [_key(v) for v in a.values]
            domains = {k[0] for k in keys if k is not None}
            if len(domains) != 1 or any(k is None for k in keys) or not (domains <= {"str", "bool"}):
                continue
            domain = domains.pop()
            slot = (a.path.value, domain)
            vals = {k[1] for k in keys if k is not None}
            s = sets.setdefault(slot, _Set())
            before = (set(s.allowed) if s.allowed is not None else None, set(s.excluded))
            if a.negated:
                s.excluded |= vals
            else:
                s.add_in(vals)
            example = _example_set(before)
            bad = s.empty()
        else:
            continue
        earlier = seen.setdefault(slot, [])
        if bad and earlier:
            ex = example if domain not in ("str", "bool") or example is None else _show(domain, example)
            return Contradiction(a.path.value, a, tuple(earlier), ex, whole)
        earlier.append(a)
    return None


def _example_set(before: tuple[set[Any] | None, set[Any]]) -> Any:
    allowed, excluded = before
    if allowed is None:
        return None
    left = sorted(allowed - excluded, key=str)
    return left[0] if left else None


def contradictions(e: ast.Expr | None) -> list[Contradiction]:
    """The contradictions of condition `e`: at most one per conjunction, outermost first."""
    if e is None:
        return []
    out = []
    for items, whole in _conjunctions(e):
        c = _check(items, whole)
        if c is not None:
            out.append(c)
    return out


def witness(e: ast.Expr | None) -> dict[str, str] | None:
    """Field values (as they would be written: `150 GBP`, `"gold"`) that make condition `e` true,
    when `e` is a conjunction of comparisons with literals (`{}` for no condition); None when it
    holds anything else (`or`, `not`, mentions, truthiness) or no value satisfies it."""
    if e is None:
        return {}
    items = e.items if isinstance(e, ast.And) else (e,)
    ranges: dict[tuple[str, str], _Range] = {}
    sets: dict[tuple[str, str], _Set] = {}
    for a in items:
        if isinstance(a, ast.Cmp):
            k = _key(a.value)
            if k is None:
                return None
            domain, v = k
            if domain in ("str", "bool"):
                if a.op not in ("==", "!="):
                    return None
                s = sets.setdefault((a.path.value, domain), _Set())
                if a.op == "==":
                    s.add_in({v})
                else:
                    s.excluded.add(v)
            else:
                ranges.setdefault((a.path.value, domain), _Range()).add(a.op, v)
        elif isinstance(a, ast.In) and not a.negated and a.values:
            keys = [_key(v) for v in a.values]
            if any(k is None for k in keys) or len({k[0] for k in keys if k}) != 1:
                return None
            domain = keys[0][0]  # type: ignore[index]
            if domain in ("str", "bool"):
                sets.setdefault((a.path.value, domain), _Set()).add_in({k[1] for k in keys if k})
            else:
                return None
        else:
            return None
    paths = [p for p, _ in ranges] + [p for p, _ in sets]
    if len(paths) != len(set(paths)):
        return None  # one field compared in two domains (two currencies): not decided here
    out: dict[str, str] = {}
    for (path, domain), r in ranges.items():
        v = r.example()
        if v is None:
            return None
        out[path] = _show(domain, v)
    for (path, domain), s in sets.items():
        if s.allowed is None:
            if domain == "bool":
                left = [x for x in (True, False) if x not in s.excluded]
                if not left:
                    return None
                out[path] = _show(domain, left[0])
            else:
                cand = "other"
                while cand in s.excluded:
                    cand += "_"
                out[path] = _show(domain, cand)
            continue
        left = sorted(s.allowed - s.excluded, key=str)
        if not left:
            return None
        out[path] = _show(domain, left[0])
    return out
