"""`policyengine diff OLD NEW`: a static comparison of two policy sets.

Rules are compared by what they say (the syntax tree, not the line they sit on):
identical rules are unchanged wherever they moved; the rest are paired by identity
(same kind and actions, or the same route condition, or the same condition with
different literals) and reported as changed with each differing part; whatever
cannot be paired is added or removed. Models and lexicons are compared by name.
Then the report lists the actions and routes whose treatment may change, including
indirect effects: a route that inherits the default fallbacks, a route through a
model whose endpoint changed, a rule that mentions a lexicon whose phrases changed.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Literal

from pydantic import BaseModel, Field

from policyengine.ci.rules import RuleInfo, hold_text, parse_sources, rules_of, shape
from policyengine.dsl import ast
from policyengine.dsl.formatter import expr as expr_text
from policyengine.dsl.formatter import limit_item, prop_text

Status = Literal["added", "removed", "changed"]


class SetInfo(BaseModel):
    spec: str
    name: str | None = None
    version: int | str | None = None
    files: list[str] = Field(default_factory=list)
    rules: int = 0


class RuleChange(BaseModel):
    kind: str
    status: Status
    old: str | None = None
    new: str | None = None
    old_at: str | None = None
    new_at: str | None = None
    details: list[str] = Field(default_factory=list)


class NamedChange(BaseModel):
    name: str
    status: Status
    details: list[str] = Field(default_factory=list)


class Impact(BaseModel):
    target: str  # "action refund", "every action", "model calls when use_case == \"code\""
    change: str
    at: list[str] = Field(default_factory=list)  # locations of the rules involved


class DiffReport(BaseModel):
    old: SetInfo
    new: SetInfo
    header: list[str] = Field(default_factory=list)  # policy name / version changes
    rules: list[RuleChange] = Field(default_factory=list)
    unchanged: int = 0
    moved: int = 0
    models: list[NamedChange] = Field(default_factory=list)
    lexicons: list[NamedChange] = Field(default_factory=list)
    impacts: list[Impact] = Field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.header or self.rules or self.models or self.lexicons or self.impacts)


# --------------------------------------------------------------------------- helpers


class _Set:
    def __init__(self, spec: str, files: list[ast.PolicyFile]) -> None:
        self.spec = spec
        self.files = files
        self.rules = rules_of(files)
        self.models: dict[str, ast.ModelDecl] = {}
        self.lexicons: dict[str, ast.Lexicon] = {}
        self.decl: ast.PolicyDecl | None = None
        for pf in files:
            for item in pf.items:
                if isinstance(item, ast.ModelDecl):
                    self.models[item.name.value] = item
                elif isinstance(item, ast.Lexicon):
                    self.lexicons[item.name.value] = item
                elif isinstance(item, ast.PolicyDecl) and self.decl is None:
                    self.decl = item
        default = next((r.node for r in self.rules if r.kind == "route" and r.node.cond is None), None)
        self.default_fallback: tuple[str, ...] = tuple(n.value for n in (default.fallback or ())) if default else ()

    def info(self) -> SetInfo:
        return SetInfo(spec=self.spec, name=self.decl.name if self.decl else None,
                       version=self.decl.version if self.decl else None,
                       files=[pf.path for pf in self.files], rules=len(self.rules))

    def chain(self, r: ast.Route) -> tuple[str, ...]:
        fb = tuple(n.value for n in r.fallback) if r.fallback is not None else self.default_fallback
        return (r.primary.value, *[m for m in fb if m != r.primary.value])


def _chain_label(chain: tuple[str, ...]) -> str:
    return " > ".join(chain)


def _hedge_text(r: ast.Route) -> str:
    if r.hedge is None:
        return ""
    return f"hedge after {r.hedge.after.raw}" + (f" budget {r.hedge.budget.raw}" if r.hedge.budget is not None else "")


def _parts(node: Any, s: _Set) -> dict[str, str]:
    """The comparable parts of a rule, as text."""
    p: dict[str, str] = {}
    cond = getattr(node, "cond", None)
    p["when"] = expr_text(cond) if cond is not None else "(always)"
    if isinstance(node, ast.Route):
        p["chain"] = _chain_label(s.chain(node))
        p["options"] = " ".join(x for x, on in (("sticky session", node.sticky),
                                                ("return on recovery", node.sticky_return),
                                                ("prefer self_hosted", node.prefer_self_hosted),
                                                (_hedge_text(node), node.hedge is not None)) if on) or "(none)"
    elif isinstance(node, ast.AllowChoice):
        p["models"] = ", ".join(n.value for n in node.models)
    elif isinstance(node, ast.Limit):
        p["amount"] = f"{node.amount.raw} per {node.window.value}"
        p["scope"] = ", ".join(n.value for n in node.scope) or "(the whole service)"
        p["models"] = ", ".join(n.value for n in node.models) if node.models is not None else "(any model)"
        p["at the limit"] = "  ".join(limit_item(li) for li in node.items or ()) or "at 100% deny"
        return p
    else:
        acts = getattr(node, "actions", None)
        p["actions"] = ", ".join(n.value for n in acts) if acts else "(every action)"
    if isinstance(node, ast.RequireApproval | ast.Escalate):
        p["hold"] = hold_text(node.hold) or "(defaults)"
    if isinstance(node, ast.Verify):
        p["models"] = ", ".join(n.value for n in node.models)
        j = node.judge
        p["judge"] = (j.model.value + (f" fallback [{', '.join(n.value for n in j.fallback)}]" if j.fallback else "")
                      + (f" timeout {j.raw}" if j.raw else "") if j is not None else "(none)")
        p["escalate"] = expr_text(node.escalate)
        p["tag"] = node.tag or "(none)"
        p["hold"] = hold_text(node.hold) or "(defaults)"
    return p


def _identity(r: RuleInfo) -> tuple[Any, ...]:
    node = r.node
    if r.kind == "route":
        return ("route", "default" if node.cond is None else expr_text(node.cond))
    if r.kind == "allow_choice":
        return ("allow_choice", expr_text(node.cond) if node.cond is not None else "")
    if r.kind in ("authorize", "require_approval", "deny"):
        return (r.kind, tuple(sorted(r.actions or ())))
    if r.kind == "limit":  # what it counts, per what, on which models, when
        return ("limit", node.kind, tuple(n.value for n in node.scope),
                tuple(sorted(n.value for n in node.models)) if node.models is not None else None,
                expr_text(node.cond) if node.cond is not None else "")
    return (r.kind, tuple(sorted(r.actions or ())), expr_text(node.cond))


def _loose_identity(r: RuleInfo) -> tuple[Any, ...]:
    node = r.node
    cond = getattr(node, "cond", None)
    if r.kind == "route":
        return ("route", shape(expr_text(cond)) if cond is not None else "default")
    return (r.kind, tuple(sorted(r.actions or ())), shape(expr_text(cond)) if cond is not None else "")


def _pair(old: list[RuleInfo], new: list[RuleInfo], key: Any) -> list[tuple[RuleInfo, RuleInfo]]:
    """Pair rules whose key is unique on both sides; removes them from the lists."""
    ob: dict[Any, list[RuleInfo]] = defaultdict(list)
    nb: dict[Any, list[RuleInfo]] = defaultdict(list)
    for r in old:
        ob[key(r)].append(r)
    for r in new:
        nb[key(r)].append(r)
    pairs = [(ob[k][0], nb[k][0]) for k in ob if len(ob[k]) == 1 and len(nb.get(k, [])) == 1]
    used_o = {id(o) for o, _ in pairs}
    used_n = {id(n) for _, n in pairs}
    old[:] = [r for r in old if id(r) not in used_o]
    new[:] = [r for r in new if id(r) not in used_n]
    return pairs


def _targets(r: RuleInfo) -> list[str]:
    if r.kind == "route":
        cond = r.node.cond
        return ["model calls (default route)" if cond is None else f"model calls when {expr_text(cond)}"]
    if r.kind == "allow_choice":
        return ["user model choice" + (f" when {expr_text(r.node.cond)}" if r.node.cond is not None else "")]
    if r.kind == "limit":
        return ["model calls" + (f" when {expr_text(r.node.cond)}" if r.node.cond is not None else "")]
    if r.actions is None:
        return ["every action" + (" (model calls included)" if r.kind in ("escalate", "verify") else "")]
    return [f"action {a}" for a in r.actions]


def _props(m: ast.ModelDecl) -> dict[str, str]:
    out: dict[str, str] = {}
    for p in m.props:
        if p.key in ("deployment", "health"):  # blocks: their canonical text (one per deployment name)
            key = f"deployment {p.value.name.value}" if p.key == "deployment" else "health"
            out[key] = prop_text(p).partition(" ")[2]
            continue
        out[p.key if p.key != "header" else f"header {p.value!r}"] = _show(p.value)
    return out


def _show(v: Any) -> str:
    if isinstance(v, ast.Str):
        return f'"{v.value}"'
    if isinstance(v, ast.Env):
        return f'env("{v.name}")'
    if isinstance(v, ast.Name):
        return v.value
    if isinstance(v, tuple | list):
        return "[" + ", ".join(_show(x) for x in v) + "]"
    if isinstance(v, ast.Value):
        return v.raw
    return str(v)


def _mentions(e: Any) -> set[str]:
    if isinstance(e, ast.Mentions):
        return {e.lexicon.value}
    if isinstance(e, ast.And | ast.Or):
        return set().union(*(_mentions(x) for x in e.items))
    if isinstance(e, ast.Not):
        return _mentions(e.item)
    return set()


def _rule_lexicons(r: RuleInfo) -> set[str]:
    node = r.node
    out = _mentions(getattr(node, "cond", None))
    if isinstance(node, ast.Verify):
        out |= _mentions(node.escalate)
    return out


def _rule_models(r: RuleInfo, s: _Set) -> set[str]:
    node = r.node
    if isinstance(node, ast.Route):
        return set(s.chain(node))
    if isinstance(node, ast.Verify):
        judges = {node.judge.model.value, *(n.value for n in node.judge.fallback)} if node.judge is not None else set()
        return {n.value for n in node.models} | judges
    if isinstance(node, ast.AllowChoice):
        return {n.value for n in node.models}
    return set()


# --------------------------------------------------------------------------- diff


def diff_sets(old_spec: str, old_sources: dict[str, str], new_spec: str, new_sources: dict[str, str]) -> DiffReport:
    """Compare two policy sets given as {file: text}. Raises PolicyError on a syntax error."""
    a = _Set(old_spec, parse_sources(old_sources))
    b = _Set(new_spec, parse_sources(new_sources))
    rep = DiffReport(old=a.info(), new=b.info())
    if (a.decl and a.decl.name) != (b.decl and b.decl.name):
        rep.header.append(f"policy name: {a.decl.name if a.decl else '(none)'} → {b.decl.name if b.decl else '(none)'}")
    if (a.decl and a.decl.version) != (b.decl and b.decl.version):
        rep.header.append(f"version: {a.decl.version if a.decl else '(none)'} → {b.decl.version if b.decl else '(none)'}")

    old_left, new_left = list(a.rules), list(b.rules)
    # 1. identical rules (wherever they are)
    by_node: dict[Any, list[RuleInfo]] = defaultdict(list)
    for r in old_left:
        by_node[(r.kind, r.text)].append(r)
    still_new: list[RuleInfo] = []
    for r in new_left:
        bucket = by_node.get((r.kind, r.text))
        if bucket:
            o = bucket.pop(0)
            rep.unchanged += 1
            if o.line != r.line or os.path.basename(o.file) != os.path.basename(r.file):
                rep.moved += 1
            if r.kind == "route" and a.chain(o.node) != b.chain(r.node):  # same text, inherited fallbacks changed
                rep.impacts.append(Impact(
                    target=_targets(r)[0],
                    change=f"chain {_chain_label(a.chain(o.node))} → {_chain_label(b.chain(r.node))} "
                           "(inherits the default route's fallbacks)",
                    at=[r.location]))
        else:
            still_new.append(r)
    old_left = [r for bucket in by_node.values() for r in bucket]
    old_left.sort(key=lambda r: (r.file, r.line))
    new_left = still_new
    # 2. pair what changed, strict identity first, then the same condition with other literals
    pairs = _pair(old_left, new_left, _identity) + _pair(old_left, new_left, _loose_identity)
    for o, n in sorted(pairs, key=lambda p: (p[1].file, p[1].line)):
        po, pn = _parts(o.node, a), _parts(n.node, b)
        details = [f"{k}: {po.get(k, '(none)')} → {pn.get(k, '(none)')}" for k in pn if po.get(k) != pn.get(k)]
        rep.rules.append(RuleChange(kind=n.kind, status="changed", old=o.text, new=n.text,
                                    old_at=o.location, new_at=n.location, details=details))
        for t in dict.fromkeys(_targets(o) + _targets(n)):
            rep.impacts.append(Impact(target=t, change=f"{n.kind.replace('_', ' ')} rule changed: " + "; ".join(details),
                                      at=[o.location, n.location]))
    for r in old_left:
        rep.rules.append(RuleChange(kind=r.kind, status="removed", old=r.text, old_at=r.location))
        for t in _targets(r):
            rep.impacts.append(Impact(target=t, change=f"rule removed: {r.text}", at=[r.location]))
    for r in new_left:
        rep.rules.append(RuleChange(kind=r.kind, status="added", new=r.text, new_at=r.location))
        for t in _targets(r):
            rep.impacts.append(Impact(target=t, change=f"rule added: {r.text}", at=[r.location]))

    # route order: first match wins, so reordering routes changes treatment
    old_routes = [r.text for r in a.rules if r.kind == "route" and r.node.cond is not None]
    new_routes = [r.text for r in b.rules if r.kind == "route" and r.node.cond is not None]
    common = [t for t in new_routes if t in old_routes]
    if common != [t for t in old_routes if t in new_routes]:
        rep.impacts.append(Impact(target="model calls matching more than one route",
                                  change="route order changed (the first matching route wins)",
                                  at=[r.location for r in b.rules if r.kind == "route" and r.text in common]))

    # models
    changed_models: dict[str, str] = {}
    for name in sorted(set(a.models) | set(b.models)):
        if name not in b.models:
            rep.models.append(NamedChange(name=name, status="removed"))
            changed_models[name] = "removed"
        elif name not in a.models:
            rep.models.append(NamedChange(name=name, status="added"))
        else:
            po, pn = _props(a.models[name]), _props(b.models[name])
            details = [f"{k}: {po.get(k, '(unset)')} → {pn.get(k, '(unset)')}"
                       for k in sorted(set(po) | set(pn)) if po.get(k) != pn.get(k)]
            if details:
                rep.models.append(NamedChange(name=name, status="changed", details=details))
                changed_models[name] = "; ".join(details)
    # lexicons
    changed_lex: dict[str, str] = {}
    for name in sorted(set(a.lexicons) | set(b.lexicons)):
        if name not in b.lexicons:
            rep.lexicons.append(NamedChange(name=name, status="removed"))
            changed_lex[name] = "removed"
        elif name not in a.lexicons:
            rep.lexicons.append(NamedChange(name=name, status="added"))
        else:
            po = [s.value for s in a.lexicons[name].phrases]
            pn = [s.value for s in b.lexicons[name].phrases]
            details = [f'+ "{p}"' for p in pn if p not in po] + [f'- "{p}"' for p in po if p not in pn]
            if details:
                rep.lexicons.append(NamedChange(name=name, status="changed", details=details))
                changed_lex[name] = ", ".join(details)
    # indirect impacts through models and lexicons (rules of the new set)
    for r in b.rules:
        for m in sorted(_rule_models(r, b) & set(changed_models)):
            for t in _targets(r):
                rep.impacts.append(Impact(target=t, change=f"uses model {m}, which changed: {changed_models[m]}",
                                          at=[r.location]))
        for lex in sorted(_rule_lexicons(r) & set(changed_lex)):
            for t in _targets(r):
                rep.impacts.append(Impact(target=t, change=f"mentions lexicon {lex}, which changed: {changed_lex[lex]}",
                                          at=[r.location]))
    rep.rules.sort(key=lambda c: ({"changed": 0, "removed": 1, "added": 2}[c.status], c.new_at or c.old_at or ""))
    return rep
