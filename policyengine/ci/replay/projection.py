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
* for `X mentions L`: the recorded mention signal when the log has one, else
  whether each policy's lexicon matches the text (the evaluator's own regex);
* the action name, requested model, prompt tokens, whether a divergence was
  supplied, which signal names were supplied and which request keys are present.

Two inputs with equal keys take the same path through every rule of every
policy given, so they get the same effect, chain, tags, obligations and rules.
Keys only ever over-distinguish. With a SignalProvider (signals computed from
text), projection is off and the whole input is the key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from types import SimpleNamespace
from typing import Any

import orjson

from policyengine.dsl import ast
from policyengine.dsl.conditions import as_money, as_number, as_seconds
from policyengine.dsl.fields import BUILTIN, MISSING, classify, field_getter
from policyengine.types import Action

Getter = Callable[[dict[str, Any], dict[str, Any], Any], Any]  # (request, signals, fields-view) -> value


def _builtin_attrs() -> dict[str, str]:
    """Which Action attribute each built-in path reads, found by probing BUILTIN with marked values."""
    names = [n for n, f in Action.model_fields.items() if f.annotation in (str | None, str)]
    probe = Action.model_validate({n: f"\x00{n}" for n in names} | {"prompt_tokens": 987654321})
    out: dict[str, str] = {}
    for path, get in BUILTIN.items():
        v = get(probe)
        if isinstance(v, str) and v.startswith("\x00"):
            out[path] = v[1:]
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
    kind, key = classify(path)
    if kind == "builtin":
        attr = _attrs().get(key)
        if attr is None:
            return None
        return lambda req, sig, fv: req.get(attr)
    if kind == "signal":
        return lambda req, sig, fv: sig.get(key)
    fg = field_getter(key)
    return lambda req, sig, fv: fg(fv)


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


class Projector:
    """Builds grouping keys for the given compiled policies (candidate and baseline)."""

    def __init__(self, policies: list[Any]) -> None:
        from policyengine.ci.rules import parse_sources

        uses: dict[str, list[Any]] = {}
        mentions: dict[tuple[str, str], list[Any]] = {}
        for pol in policies:
            for pf in parse_sources(pol.sources):
                for item in pf.items:
                    exprs = [getattr(item, "cond", None)]
                    if isinstance(item, ast.Verify):
                        exprs.append(item.escalate)
                    for e in exprs:
                        for atom in _atoms(e):
                            if isinstance(atom, ast.Mentions):
                                mentions.setdefault((atom.path.value, atom.lexicon.value), [])
                            else:
                                uses.setdefault(atom.path.value, []).append(atom)
        for (_path, lex), regexes in mentions.items():
            for pol in policies:
                rx = getattr(pol, "lexicon_res", {}).get(lex)
                if rx is None:
                    raise ValueError(f"policy has no compiled lexicon {lex!r}")
                regexes.append(rx)
        self.parts: list[Callable[[dict[str, Any], dict[str, Any], Any], Any]] = []
        for path, atoms in sorted(uses.items()):
            get = _getter(path)
            if get is None:
                raise ValueError(f"cannot project path {path!r}")
            self.parts.append(self._part(get, atoms))
        for (path, lex), regexes in sorted(mentions.items(), key=lambda kv: kv[0]):
            get = _getter(path)
            if get is None:
                raise ValueError(f"cannot project path {path!r}")
            self.parts.append(self._mention_part(get, lex, regexes))

    @staticmethod
    def _part(get: Getter, atoms: list[Any]) -> Callable[[dict[str, Any], dict[str, Any], Any], Any]:
        literals = []
        for a in atoms:
            if not (isinstance(a, ast.Cmp) and a.value.kind in ("num", "money", "duration")):
                return lambda req, sig, fv: _hashable(get(req, sig, fv))
            literals.append((a.value.kind, a.value.value))
        literals = list(dict.fromkeys(literals))

        def part(req: dict[str, Any], sig: dict[str, Any], fv: Any) -> Any:
            v = get(req, sig, fv)
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

        return part

    @staticmethod
    def _mention_part(get: Getter, lex: str, regexes: list[Any]) -> Callable[[dict[str, Any], dict[str, Any], Any], Any]:
        key = f"mentions.{lex}"

        def part(req: dict[str, Any], sig: dict[str, Any], fv: Any) -> Any:
            sup = sig.get(key, MISSING)
            if sup is MISSING:
                m = sig.get("mentions")
                if isinstance(m, dict) and lex in m:
                    sup = m[lex]
            if sup is not MISSING and sup is not None:
                return ("s", not (sup is False or sup == ""))
            v = get(req, sig, fv)
            if not isinstance(v, str) or not v:
                return ("t", None)
            return ("t", tuple(rx.search(v) is not None for rx in regexes))

        return part

    def key(self, request: dict[str, Any], signals: dict[str, Any]) -> tuple[Any, ...]:
        fields = request.get("fields")
        fv = SimpleNamespace(fields=fields if isinstance(fields, dict) else {})
        return (
            request.get("action"), request.get("requested_model"), request.get("prompt_tokens"),
            signals.get("divergence") is None, tuple(sorted(signals)),
            tuple(sorted((k, type(v).__name__) for k, v in request.items())),
            *(p(request, signals, fv) for p in self.parts),
        )
