"""Group logged inputs that every policy involved must decide the same way.

Replaying a million decisions one evaluation each is slow; most of them differ
only in things no rule reads (text, session, actor, ids) or in numbers on the
same side of every threshold (a 0.81 and a 0.84 sentiment against `< 0.3`).
`Projector.key()` maps an input to what the policies can observe of it:

* every path a condition reads (`amount`, `tenant.tier`, `sentiment`...). When a
  path is only ever compared with number / money / duration literals, its value is
  replaced by its position against each literal (below / equal / above, or
  "undecidable"), computed with the evaluator's own conversions;
  otherwise the raw value is kept;
* for `X mentions L`: whether each policy sees a mention, asked of the evaluator's
  own `EvalContext.mention` (recorded mention signal, else its phrase matching);
* the action name, requested model, prompt tokens, whether a divergence was
  supplied, which signal names were supplied and which request keys are present.

Two inputs with equal keys take the same path through every rule of every
policy given, so they get the same effect, chain, tags, obligations and rules.
Keys only ever over-distinguish. With a SignalProvider (signals computed from
text), projection is off and the whole input is the key.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from typing import Any

import orjson

from policyengine.dsl import ast
from policyengine.dsl.compiler import as_money, as_number, as_seconds
from policyengine.ir import BUILTIN, MISSING, classify, field_getter
from policyengine.types import Action

Getter = Callable[[dict[str, Any], dict[str, Any], Any], Any]  # (request, signals, fields view) -> value


# Marks a probe value: a string no real field starts with, and that Action accepts (no NUL).
_MARK = "\u2063probe:"


def _builtin_attrs() -> dict[str, str]:
    """Which Action attribute each built-in path reads, found by probing BUILTIN with marked values."""
    names = [n for n, f in Action.model_fields.items() if f.annotation in (str | None, str)]
    probe = Action.model_validate({n: f"{_MARK}{n}" for n in names} | {"prompt_tokens": 987654321})
    out: dict[str, str] = {}
    for path, get in BUILTIN.items():
        v = get(probe)
        if isinstance(v, str) and v.startswith(_MARK):
            out[path] = v[len(_MARK):]
        elif v == 987654321:
            out[path] = "prompt_tokens"
    return out


_ATTRS: dict[str, str] | None = None


def _attrs() -> dict[str, str]:
    global _ATTRS
    if _ATTRS is None:
        _ATTRS = _builtin_attrs()
    return _ATTRS


def _getter(path: str) -> Getter | None:
    """(request, signals, fields) -> the value the evaluator's getter would see (MISSING when absent)."""
    kind, key = classify(path)
    if kind == "builtin":
        attr = _attrs().get(key)
        if attr is None:
            return None
        return lambda req, sig, fields: req.get(attr)
    if kind == "signal":
        return lambda req, sig, fields: sig.get(key)
    # the evaluator's field_getter, on the logged `fields` dict
    fg = field_getter(key)
    return lambda req, sig, fields: fg(fields)


def _atoms(e: Any) -> Iterable[Any]:
    if isinstance(e, ast.And | ast.Or):
        for x in e.items:
            yield from _atoms(x)
    elif isinstance(e, ast.Not):
        yield from _atoms(e.item)
    elif e is not None:
        yield e


def _sign(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


def _hashable(v: Any) -> Any:
    if isinstance(v, dict | list):
        return orjson.dumps(v, option=orjson.OPT_SORT_KEYS, default=str)
    return v


class _SignalsView:
    """What `EvalContext.mention` reads of an Action: its `.signals`."""

    __slots__ = ("signals",)

    def __init__(self, signals: dict[str, Any]) -> None:
        self.signals = signals


class _View:
    """What `field_getter` reads: an object with `.fields`."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields


class Projector:
    """Builds grouping keys for the given compiled policies (candidate and baseline)."""

    def __init__(self, policies: list[Any]) -> None:
        from policyengine.ci.rules import parse_sources

        uses: dict[str, list[Any]] = {}
        mentions: dict[tuple[str, str], None] = {}
        for pol in policies:
            for pf in parse_sources(pol.sources):
                for item in pf.items:
                    exprs = [getattr(item, "cond", None)]
                    if isinstance(item, ast.Verify):
                        exprs.append(item.escalate)
                    for e in exprs:
                        for atom in _atoms(e):
                            if isinstance(atom, ast.Mentions):
                                mentions[(atom.path.value, atom.lexicon.value)] = None
                            else:
                                uses.setdefault(atom.path.value, []).append(atom)
        for (_path, lex) in mentions:
            for pol in policies:
                if lex not in pol.lexicons:
                    raise ValueError(f"policy has no lexicon {lex!r}")
        self.contexts = sorted({m.context for pol in policies for m in pol.models.values() if m.context is not None})
        self.parts: list[Callable[[dict[str, Any], dict[str, Any], Any], Any]] = []
        self.raw_attrs: list[str] = []  # built-ins compared as raw values: read with one map()
        self.raw_signals: list[str] = []
        for path, atoms in sorted(uses.items()):
            get = _getter(path)
            if get is None:
                raise ValueError(f"cannot project path {path!r}")
            kind, key = classify(path)
            numeric = all(isinstance(a, ast.Cmp) and a.value.kind in ("num", "money", "duration") for a in atoms)
            if not numeric and kind == "builtin":
                self.raw_attrs.append(_attrs()[key])
            elif not numeric and kind == "signal":
                self.raw_signals.append(key)
            else:
                self.parts.append(self._part(get, atoms))
        for path, lex in sorted(mentions):
            get = _getter(path)
            if get is None:
                raise ValueError(f"cannot project path {path!r}")
            self.parts.append(self._mention_part(get, path, lex, policies))

    @staticmethod
    def _part(get: Getter, atoms: list[Any]) -> Callable[[dict[str, Any], dict[str, Any], Any], Any]:
        kinds = set()
        for a in atoms:
            if not (isinstance(a, ast.Cmp) and a.value.kind in ("num", "money", "duration")):
                return lambda req, sig, fields: _hashable(get(req, sig, fields))
            kinds.add(a.value.kind)
        if kinds <= {"num"} or kinds <= {"duration"}:
            # position among the sorted thresholds (+ "equal to one") = every comparison's outcome
            lits = sorted({float(a.value.value) for a in atoms})
            conv = as_seconds if kinds == {"duration"} else as_number

            def num_part(req: dict[str, Any], sig: dict[str, Any], fields: Any) -> Any:
                v = get(req, sig, fields)
                if v is None or v is MISSING:
                    return ("-", v is None)
                t = type(v)
                n = float(v) if (t is float or t is int) and kinds == {"num"} else conv(v)
                if n is None:
                    return "u"
                i = bisect_left(lits, n)
                return (i, i < len(lits) and lits[i] == n)

            return num_part
        if kinds == {"money"}:
            by_cur: dict[str, list[Any]] = {}
            for a in atoms:
                amount, cur = a.value.value
                by_cur.setdefault(cur, []).append(amount)
            sorted_by_cur = {c: sorted(set(v)) for c, v in by_cur.items()}

            def money_part(req: dict[str, Any], sig: dict[str, Any], fields: Any) -> Any:
                v = get(req, sig, fields)
                if v is None or v is MISSING:
                    return ("-", v is None)
                m = as_money(v)
                if m is None:
                    return "u"
                amount, cur = m
                lits = sorted_by_cur.get(cur)
                if lits is None:
                    return ("c", cur)  # every comparison is a currency mismatch: undecidable
                i = bisect_left(lits, amount)
                return (cur, i, i < len(lits) and lits[i] == amount)

            return money_part
        literals = list(dict.fromkeys((a.value.kind, a.value.value) for a in atoms))

        def mixed_part(req: dict[str, Any], sig: dict[str, Any], fields: Any) -> Any:
            v = get(req, sig, fields)
            if v is None or v is MISSING:
                return ("-", v is None)
            out = []
            for kind, lit in literals:
                if kind == "money":
                    m = as_money(v)
                    out.append("u" if m is None or m[1] != lit[1] else _sign(m[0], lit[0]))
                else:
                    n = (as_seconds if kind == "duration" else as_number)(v)
                    out.append("u" if n is None else _sign(n, float(lit)))
            return tuple(out)

        return mixed_part

    @staticmethod
    def _mention_part(get: Getter, path: str, lex: str, policies: list[Any]) -> Callable[[dict[str, Any], dict[str, Any], Any], Any]:
        """Whether each policy sees a mention, decided by the evaluator's own `EvalContext.mention`
        (supplied signal values, then exact phrase matching of the text with that policy's lexicon)."""
        from policyengine.evaluator import EvalContext

        def part(req: dict[str, Any], sig: dict[str, Any], fields: Any) -> Any:
            v = get(req, sig, fields)
            text = v if isinstance(v, str) else None
            view = _SignalsView(sig)
            return tuple(bool(EvalContext(view, None, pol).mention(lex, text, path)) for pol in policies)  # type: ignore[arg-type]

        return part

    def key(self, request: dict[str, Any], signals: dict[str, Any]) -> tuple[Any, ...]:
        fv = None
        if self.parts:
            fields = request.get("fields")
            fv = _View(fields if type(fields) is dict else {})
        pt = request.get("prompt_tokens")
        if type(pt) is int:  # only its position against each model's context window matters
            pt = (bisect_left(self.contexts, pt),)
        return (
            request.get("action"), request.get("requested_model"), pt,
            signals.get("divergence") is None, tuple(signals), tuple(request), tuple(map(type, request.values())),
            tuple(map(request.get, self.raw_attrs)), tuple(map(signals.get, self.raw_signals)),
            *[p(request, signals, fv) for p in self.parts],
        )
