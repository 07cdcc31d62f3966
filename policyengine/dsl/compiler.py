"""Checked AST -> CompiledPolicy: closures, action index, route index, ModelSpecs."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from policyengine.evaluator import (
    CHAT,
    ActionPlan,
    CompiledChoice,
    CompiledPolicy,
    CompiledRoute,
    CompiledRule,
    lexicon_regex,
)
from policyengine.types import (
    Capabilities,
    Channel,
    EnvRef,
    ModelSpec,
    Provider,
    SourceSpan,
    Timeouts,
)

from . import ast
from .conditions import compile_expr
from .fields import BUILTIN, MISSING, classify, field_getter


def content_hash(sources: dict[str, str]) -> str:
    """sha256 over the files (by base name, in name order) with normalised line endings/trailing space."""
    h = hashlib.sha256()
    for path in sorted(sources, key=lambda p: Path(p).name):
        text = "\n".join(line.rstrip() for line in sources[path].replace("\r\n", "\n").split("\n")).strip("\n")
        h.update(Path(path).name.encode() + b"\0" + text.encode() + b"\0")
    return h.hexdigest()


def _sspan(s: ast.Span) -> SourceSpan:
    return SourceSpan(file=s.file, line=s.line, col=s.col, end_line=s.end_line, end_col=s.end_col)


def _rule_id(s: ast.Span) -> str:
    return f"{Path(s.file).name}:{s.line}"


def _source(lines: dict[str, list[str]], s: ast.Span) -> str:
    """The rule's first source line (stripped), with " ..." when it spans more lines."""
    file_lines = lines.get(s.file, [])
    if 1 <= s.line <= len(file_lines):
        first = file_lines[s.line - 1].strip()
        return first + (" ..." if s.end_line > s.line else "")
    return ""


def _str(v: Any) -> str | EnvRef:
    return EnvRef(name=v.name) if isinstance(v, ast.Env) else v.value


def model_spec(m: ast.ModelDecl) -> ModelSpec:
    kw: dict[str, Any] = {"name": m.name.value, "file": m.span.file, "line": m.span.line}
    for p in m.props:
        if p.key == "provider":
            kw["provider"] = Provider(p.value.value)
        elif p.key == "base_url":
            kw["base_url"] = _str(p.value)
        elif p.key == "model_id":
            kw["model_id"] = p.value.value
        elif p.key == "keys":
            kw["keys"] = tuple(EnvRef(name=k.name) for k in p.value if isinstance(k, ast.Env))
        elif p.key == "cost":
            amount, per = p.value
            kw["cost_per_1k"] = (amount * Decimal(1000) / Decimal(per)).normalize()
        elif p.key == "context":
            kw["context"] = p.value
        elif p.key == "timeout":
            kw["timeouts"] = Timeouts(**{t.kind: float(t.seconds) for t in p.value})
        elif p.key == "supports":
            caps = set(p.value)
            kw["capabilities"] = Capabilities(streaming="streaming" in caps, tools="tools" in caps,
                                              prefill="prefill" in caps)
        elif p.key == "region":
            kw["region"] = p.value.value
        elif p.key == "project":
            kw["project"] = _str(p.value)
        elif p.key == "header":
            hname, hval = p.value
            kw.setdefault("headers", {})[hname] = _str(hval)
    kw.setdefault("provider", Provider.openai)
    return ModelSpec(**kw)


def _obligation(hold: tuple[ast.HoldItem, ...] | None) -> dict[str, Any]:
    o: dict[str, Any] = {"channels": [], "on_timeout": "deny"}
    for h in hold or ():
        if h.kind == "reviewers":
            o["group"] = h.group
        elif h.kind == "notify":
            o["channels"].extend(Channel(kind=c.kind, target=c.target) for c in h.channels)  # type: ignore[arg-type]
        elif h.kind == "remind":
            o["remind_every_s"] = float(h.seconds or 0)
        elif h.kind == "timeout":
            o["timeout_s"] = float(h.seconds or 0)
            o["on_timeout"] = h.outcome or "deny"
            o["escalate_to"] = h.group
    return o


def signals_of(e: ast.Expr | None) -> frozenset[str]:
    """The signals a condition reads: "sentiment", "confidence", "divergence", "mentions:<lexicon>"."""
    out: set[str] = set()
    stack = [e] if e is not None else []
    while stack:
        x = stack.pop()
        if isinstance(x, ast.And | ast.Or):
            stack.extend(x.items)
        elif isinstance(x, ast.Not):
            stack.append(x.item)
        elif isinstance(x, ast.Mentions):
            out.add(f"mentions:{x.lexicon.value}")
        else:
            kind, key = classify(x.path.value)  # type: ignore[union-attr]
            if kind == "signal":
                out.add(key)
    return frozenset(out)


def _verify_threshold(e: ast.Expr) -> float | None:
    if (isinstance(e, ast.Cmp) and e.path.value in ("divergence", "signals.divergence") and e.op in (">", ">=")
            and e.value.kind == "num"):
        return float(e.value.value)  # type: ignore[arg-type]
    return None


def _index_key(e: ast.Expr | None) -> tuple[str, tuple[str, ...]] | None:
    """A conjunct `path == "x"` / `path in ["x", ...]` the route cannot match without."""
    if e is None:
        return None
    conj = e.items if isinstance(e, ast.And) else (e,)
    for c in conj:
        if isinstance(c, ast.Cmp) and c.op == "==" and c.value.kind == "str":
            return c.path.value, (c.value.value,)  # type: ignore[return-value]
        if isinstance(c, ast.In) and not c.negated and c.values and all(v.kind == "str" for v in c.values):
            return c.path.value, tuple(v.value for v in c.values)  # type: ignore[misc]
    return None


def _path_getter(path: str):
    kind, key = classify(path)
    if kind == "builtin":
        return BUILTIN[key]
    if kind == "field":
        return field_getter(key)
    return None


def compile_files(files: list[ast.PolicyFile]) -> CompiledPolicy:
    by_file = {f.path: f.text.split("\n") for f in files}
    items: list[ast.Item] = [it for f in files for it in f.items]
    header = next((it for it in items if isinstance(it, ast.PolicyDecl)), None)
    name = header.name if header else (Path(files[0].path).stem if files else "policy")
    version = header.version if header else None

    models = {it.name.value: model_spec(it) for it in items if isinstance(it, ast.ModelDecl)}
    lexicons = {it.name.value: [p.value for p in it.phrases] for it in items if isinstance(it, ast.Lexicon)}
    policy = CompiledPolicy(
        name=name, version=version, hash=content_hash({f.path: f.text for f in files}), models=models,
        lexicons=lexicons, sources={f.path: f.text for f in files},
    )
    policy.lexicon_res = {k: lexicon_regex(v) for k, v in lexicons.items()}

    specific: dict[str, dict[str, list[CompiledRule]]] = defaultdict(lambda: {"deny": [], "hold": [], "auth": []})
    global_holds: list[CompiledRule] = []
    global_denies: list[CompiledRule] = []
    named: set[str] = set()
    default_route: ast.Route | None = None
    routes: list[ast.Route] = []
    order = 0

    def rule(kind: str, it: Any, cond: ast.Expr | None, **extra: Any) -> CompiledRule:
        nonlocal order
        order += 1
        return CompiledRule(kind=kind, rule_id=_rule_id(it.span), span=_sspan(it.span), source=_source(by_file, it.span),
                            cond=compile_expr(cond) if cond is not None else None, order=order,
                            signals=signals_of(cond), restrictive=kind != "authorize", **extra)

    for it in items:
        if isinstance(it, ast.Deny):
            r = rule("deny", it, it.cond)
            for a in it.actions:
                specific[a.value]["deny"].append(r)
                named.add(a.value)
        elif isinstance(it, ast.Authorize):
            r = rule("authorize", it, it.cond)
            for a in it.actions:
                specific[a.value]["auth"].append(r)
                named.add(a.value)
        elif isinstance(it, ast.RequireApproval):
            r = rule("require_approval", it, it.cond, obligation=_obligation(it.hold))
            for a in it.actions:
                specific[a.value]["hold"].append(r)
                named.add(a.value)
        elif isinstance(it, ast.Escalate):
            r = rule("escalate", it, it.cond, obligation=_obligation(it.hold))
            if it.actions is None:
                global_holds.append(r)
            else:
                for a in it.actions:
                    specific[a.value]["hold"].append(r)
                    named.add(a.value)
        elif isinstance(it, ast.Verify):
            r = rule("verify", it, it.cond, obligation=_obligation(it.hold), models=tuple(m.value for m in it.models),
                     threshold=_verify_threshold(it.escalate), divergence_cond=compile_expr(it.escalate), tag=it.tag)
            if it.actions is None:
                global_holds.append(r)
            else:
                for a in it.actions:
                    specific[a.value]["hold"].append(r)
                    named.add(a.value)
        elif isinstance(it, ast.Route):
            if it.cond is None:
                default_route = default_route or it
            else:
                routes.append(it)
        elif isinstance(it, ast.AllowChoice):
            policy.choices.append(CompiledChoice(
                rule_id=_rule_id(it.span), span=_sspan(it.span), source=_source(by_file, it.span),
                cond=compile_expr(it.cond) if it.cond is not None else None, models=tuple(m.value for m in it.models)))

    def by_order(rs: list[CompiledRule]) -> tuple[CompiledRule, ...]:
        return tuple(sorted({id(r): r for r in rs}.values(), key=lambda r: r.order)) if rs else ()

    for a, groups in specific.items():
        policy.plans[a] = ActionPlan(
            denies=by_order(groups["deny"] + global_denies), holds=by_order(groups["hold"] + global_holds),
            authorizes=by_order(groups["auth"]), named=True,
        )
    policy.global_plan = ActionPlan(denies=by_order(global_denies), holds=by_order(global_holds))
    policy.actions = frozenset(named)
    if CHAT not in policy.plans:
        policy.plans[CHAT] = ActionPlan(denies=policy.global_plan.denies, holds=policy.global_plan.holds, named=True)

    # routes
    default_fallback: tuple[str, ...] = ()
    if default_route is not None:
        default_fallback = tuple(n.value for n in (default_route.fallback or ()))
        policy.default_route = _route(by_file, default_route, -1, default_route.primary.value, default_fallback)
        default_fallback = (default_route.primary.value, *default_fallback)
    index: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    scan: list[int] = []
    for i, rt in enumerate(routes):
        fb = tuple(n.value for n in rt.fallback) if rt.fallback is not None else default_fallback
        policy.routes.append(_route(by_file, rt, i, rt.primary.value, fb))
        key = _index_key(rt.cond)
        if key is not None and _path_getter(key[0]) is not None:
            for v in key[1]:
                index[key[0]][v].append(i)
        else:
            scan.append(i)
    for path, table in index.items():
        g = _path_getter(path)
        assert g is not None
        policy.route_index[path] = (g, {v: tuple(ix) for v, ix in table.items()})
    policy.route_scan = tuple(scan)
    rs: set[str] = set()
    for rt in routes:
        rs |= signals_of(rt.cond)
    for it in items:
        if isinstance(it, ast.AllowChoice):
            rs |= signals_of(it.cond)
    policy.route_signals = frozenset(rs)
    return policy


def _route(by_file: dict[str, list[str]], rt: ast.Route, order: int, primary: str,
           fallback: tuple[str, ...]) -> CompiledRoute:
    chain = tuple(dict.fromkeys((primary, *fallback)))
    return CompiledRoute(
        rule_id=_rule_id(rt.span), span=_sspan(rt.span), source=_source(by_file, rt.span),
        cond=compile_expr(rt.cond) if rt.cond is not None else None, order=order, chain=chain, sticky=rt.sticky,
        sticky_return=rt.sticky_return, prefer_self_hosted=rt.prefer_self_hosted,
    )


__all__ = ["MISSING", "compile_files", "content_hash", "model_spec"]
