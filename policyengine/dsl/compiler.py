"""Checked AST -> the compiled form (`policyengine.ir.PolicyIR`).

Conditions become closures with three-valued (Kleene) logic. A compiled condition is
`cond(ctx, because) -> True | False | None` over a `policyengine.ir.ConditionContext`.
`None` means "cannot be decided" (an action field is missing, a currency differs, a
value has the wrong type). Each rule decides what `None` means for it: restrictive
rules (deny, require approval, escalate, verify) fire on `None` (fail-safe: hold rather
than let through); permissive ones (authorize, routes, model choice) do not. Leaves
append a human-readable comparison to `because` when they are true or undecidable,
e.g. `sentiment 0.21 < 0.3`, `amount 150 USD vs 100 GBP: currency mismatch`.

Rules are indexed by the action names they list (rules without `for` join every plan);
routes by a string equality or membership their condition cannot match without, so
the evaluator tests only the rules and routes that can apply. Models become ModelSpecs.
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections import defaultdict
from collections.abc import Callable, Generator
from dataclasses import replace
from decimal import Decimal
from functools import partial
from operator import attrgetter
from pathlib import Path
from typing import Any

from policyengine.ir import (
    BUILTIN,
    BUILTIN_ATTR,
    CHAT,
    EMBEDDINGS,
    MICRO,
    MISSING,
    WINDOWS,
    ActionPlan,
    CompiledChoice,
    CompiledLimit,
    CompiledRoute,
    CompiledRule,
    Cond,
    ConditionContext,
    PolicyIR,
    RouteKey,
    classify,
    field_getter,
    mention_mode,
    mention_signal,
)
from policyengine.types import (
    Capabilities,
    Channel,
    Deployment,
    EnvRef,
    HealthCheck,
    ModelSpec,
    Provider,
    SourceSpan,
    Timeouts,
    parse_money,
)

from . import ast
from . import formatter as fmt
from .parser import canonical_decimal, parse_duration

# ---------------------------------------------------------------------------- conditions

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
}


def show(v: Any) -> str:
    """A runtime value as explanations print it, and as a string condition compares a
    non-string value: strings quoted, booleans `true`/`false`, decimals canonical,
    `{"amount", "currency"}` dicts as `150 GBP`."""
    if isinstance(v, str):
        return _quote(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, Decimal):
        return canonical_decimal(v)
    if isinstance(v, dict) and set(v) == {"amount", "currency"}:
        return f"{v['amount']} {v['currency']}"
    return str(v)


def _quote(s: str) -> str:
    return '"' + s.replace('"', '\\"') + '"'


as_money = parse_money  # one money reader for the language, the runtime and replay


def as_number(v: Any) -> float | None:
    """A number from a number or a numeric string; None otherwise (booleans are not numbers)."""
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
    """Seconds from a number of seconds or a duration string (`2h`, `500ms`); None otherwise."""
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
    """A boolean from a boolean or the string `true`/`false` (any case); None otherwise."""
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return None


def _getter(path: str) -> tuple[str, Callable[[ConditionContext], Any]]:
    kind, key = classify(path)
    if kind == "builtin":
        read = attrgetter("action." + BUILTIN_ATTR[key])

        def builtin(ctx: ConditionContext) -> Any:
            v = read(ctx)
            return MISSING if v is None else v

        return kind, builtin
    if kind == "signal":
        return kind, partial(_signal, key=key)
    fg = field_getter(key)
    return kind, lambda ctx: fg(ctx.action)


def _signal(ctx: ConditionContext, key: str) -> Any:
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


def compile_expr(e: ast.Expr) -> Cond:
    """The condition `e` as a closure over a ConditionContext, in three-valued logic:
    True, False, or None (undecidable); see the module docstring for what it explains."""
    if isinstance(e, ast.And):
        parts = [compile_expr(x) for x in e.items]

        def and_(ctx: ConditionContext, because: list[str]) -> bool | None:
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
        parts = [compile_expr(x) for x in e.items]

        def or_(ctx: ConditionContext, because: list[str]) -> bool | None:
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
        inner = compile_expr(e.item)
        text = fmt.expr(e.item)

        def not_(ctx: ConditionContext, because: list[str]) -> bool | None:
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

        def truthy(ctx: ConditionContext, because: list[str]) -> bool | None:
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
        mode = mention_mode(lex, e.mode.value if e.mode is not None else None)
        kind, get = _getter(path)
        by = f" by {mode}" if e.mode is not None else ""

        def mentions(ctx: ConditionContext, because: list[str]) -> bool | None:
            v = get(ctx)
            text = v if isinstance(v, str) else None
            found = ctx.mention(lex, text, path, mode) if mode != "words" else ctx.mention(lex, text, path)
            if found:
                because.append(f"{path} mentions {lex}{by} ({found})")
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

        def cmp_money(ctx: ConditionContext, because: list[str]) -> bool | None:
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

        def cmp_str(ctx: ConditionContext, because: list[str]) -> bool | None:
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

        def cmp_bool(ctx: ConditionContext, because: list[str]) -> bool | None:
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

    def cmp_num(ctx: ConditionContext, because: list[str]) -> bool | None:
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
    listing = fmt.values(e.values)
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

    def in_(ctx: ConditionContext, because: list[str]) -> bool | None:
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


# ---------------------------------------------------------------------------- policy sets


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
    """The ModelSpec a checked `model` block declares (provider `openai` when it names none)."""
    kw: dict[str, Any] = {"name": m.name.value, "file": m.span.file, "line": m.span.line}
    for p in m.props:
        if p.key == "provider":
            kw["provider"] = Provider(p.value.value)
        elif p.key == "api":
            kw["api"] = p.value.value
        elif p.key == "base_url":
            kw["base_url"] = _str(p.value)
        elif p.key == "model_id":
            kw["model_id"] = p.value.value
        elif p.key == "keys":
            kw["keys"] = tuple(EnvRef(name=k.name) for k in p.value if isinstance(k, ast.Env))
        elif p.key == "cost":
            amount, per, currency = p.value
            kw["cost_per_1k"] = (amount * Decimal(1000) / Decimal(per)).normalize()
            kw["cost_currency"] = currency
        elif p.key == "context":
            kw["context"] = p.value
        elif p.key == "timeout":
            kw["timeouts"] = Timeouts(**{t.kind: float(t.seconds) for t in p.value})
        elif p.key == "supports":
            caps = set(p.value)
            kw["capabilities"] = Capabilities(streaming="streaming" in caps, tools="tools" in caps,
                                              prefill="prefill" in caps)
        elif p.key == "serves":
            kw["serves"] = tuple(dict.fromkeys(n.value for n in p.value))
        elif p.key == "region":
            kw["region"] = p.value.value
        elif p.key == "project":
            kw["project"] = _str(p.value)
        elif p.key == "header":
            hname, hval = p.value
            kw.setdefault("headers", {})[hname] = _str(hval)
        elif p.key == "deployment":
            kw.setdefault("deployments", []).append(_deployment(p.value))
        elif p.key == "balance":
            kw["balance"] = p.value.value
        elif p.key == "health":
            h = p.value
            kw["health"] = HealthCheck(path=h.path.value if h.path is not None else None,
                                       interval=float(h.every.value) if h.every is not None else None)
    kw.setdefault("provider", Provider.openai)
    if "deployments" in kw:
        kw["deployments"] = tuple(kw["deployments"])
    return ModelSpec(**kw)


def _deployment(d: ast.DeploymentDecl) -> Deployment:
    """The Deployment a checked `deployment` block declares."""
    kw: dict[str, Any] = {"name": d.name.value, "line": d.span.line}
    for p in d.props:
        if p.key == "base_url":
            kw["base_url"] = _str(p.value)
        elif p.key == "keys":
            kw["keys"] = tuple(EnvRef(name=k.name) for k in p.value if isinstance(k, ast.Env))
        elif p.key == "weight":
            kw["weight"] = float(p.value.value)
        elif p.key == "max_concurrency":
            kw["max_concurrency"] = int(p.value.value)
        elif p.key == "region":
            kw["region"] = p.value.value
    return Deployment(**kw)


def _obligation(hold: tuple[ast.HoldItem, ...] | None, chat: str = "hold") -> dict[str, Any]:
    """The rule's ApprovalObligation fields; `chat` is what the hold means for a chat request
    when the block does not say (`on chat ...`)."""
    o: dict[str, Any] = {"channels": [], "on_timeout": "deny", "chat": chat}
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
        elif h.kind == "chat":
            o["chat"] = h.mode
        elif h.kind == "confirm":
            o["user_confirm"] = True
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
            lex = x.lexicon.value
            out.add(mention_signal(lex, mention_mode(lex, x.mode.value if x.mode is not None else None)))
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


def _route_key(path: str) -> RouteKey | None:
    """The route index's reader of `path`: the value as string conditions compare it
    (a non-string shown as a literal), None when absent; None for a path that is a signal."""
    kind, key = classify(path)
    if kind == "builtin":
        get = BUILTIN[key]
    elif kind == "field":
        get = field_getter(key)
    else:
        return None

    def key_of(a: Any) -> str | None:
        v = get(a)
        if v is None or v is MISSING:
            return None
        return v if isinstance(v, str) else show(v)

    return key_of


def lexicon_regex(phrases: list[str]) -> re.Pattern[str]:
    """Whole-word, case-insensitive, whitespace-tolerant match of any phrase."""
    alts = sorted({r"\s+".join(map(re.escape, p.split())) for p in phrases if p.strip()}, key=len, reverse=True)
    if not alts:
        return re.compile(r"(?!x)x")
    return re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)", re.IGNORECASE)


def compile_files(files: list[ast.PolicyFile]) -> PolicyIR:
    """The compiled form of a checked policy set (its files in order). The caller has
    run the checker: the compiler assumes names resolve and types agree."""
    steps = compile_steps(files)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


def compile_steps(files: list[ast.PolicyFile]) -> Generator[None, None, PolicyIR]:
    """`compile_files` one rule at a time: the generator yields after each item and each route
    and returns the PolicyIR, so a caller can compile a large set in slices (the service's
    reload does, on its event loop, between requests: `policyengine.gateway.policies`)."""
    by_file = {f.path: f.text.split("\n") for f in files}
    items: list[ast.Item] = [it for f in files for it in f.items]
    header = next((it for it in items if isinstance(it, ast.PolicyDecl)), None)
    name = header.name if header else (Path(files[0].path).stem if files else "policy")
    version = header.version if header else None

    models = {it.name.value: model_spec(it) for it in items if isinstance(it, ast.ModelDecl)}
    lexicons = {it.name.value: [p.value for p in it.phrases] for it in items if isinstance(it, ast.Lexicon)}
    policy = PolicyIR(
        name=name, version=version, hash=content_hash({f.path: f.text for f in files}), models=models,
        lexicons=lexicons, sources={f.path: f.text for f in files},
    )
    policy.lexicon_res = {k: lexicon_regex(v) for k, v in lexicons.items()}

    specific: dict[str, dict[str, list[CompiledRule]]] = defaultdict(lambda: {"deny": [], "hold": [], "auth": []})
    global_holds: list[CompiledRule] = []
    named: set[str] = set()
    default_route: ast.Route | None = None
    routes: list[ast.Route] = []
    embed_routes: list[ast.Route] = []
    order = 0

    def rule(kind: str, it: Any, cond: ast.Expr | None, **extra: Any) -> CompiledRule:
        nonlocal order
        order += 1
        return CompiledRule(kind=kind, rule_id=_rule_id(it.span), span=_sspan(it.span), source=_source(by_file, it.span),
                            cond=compile_expr(cond) if cond is not None else None, order=order,
                            signals=signals_of(cond), restrictive=kind != "authorize", **extra)

    specific_shadows: dict[str, list[CompiledRule]] = defaultdict(list)
    global_shadows: list[CompiledRule] = []
    kinds = {ast.Deny: "deny", ast.Authorize: "authorize", ast.RequireApproval: "require_approval",
             ast.Escalate: "escalate", ast.Verify: "verify"}

    for it in items:
        yield
        if isinstance(it, ast.Limit):
            # a shadow limit is counted like the others; the gateway and `at_limit` never enforce it
            policy.limits.append(compile_limit(by_file, it))
            continue
        if getattr(it, "shadow", False):
            # a shadow rule is compiled like its rule but kept apart: it never reaches the plans'
            # denies / holds / authorizes, and does not make its actions `named`
            kind = kinds[type(it)]
            extra: dict[str, Any] = {"shadow": True}
            if isinstance(it, ast.RequireApproval):
                extra["obligation"] = _obligation(it.hold)
            elif isinstance(it, ast.Escalate):
                extra["obligation"] = _obligation(it.hold, chat="review" if it.actions is None else "hold")
            elif isinstance(it, ast.Verify):
                extra.update(obligation=_obligation(it.hold), models=tuple(m.value for m in it.models),
                             threshold=_verify_threshold(it.escalate), divergence_cond=compile_expr(it.escalate),
                             tag=it.tag, judge=it.judge.model.value if it.judge is not None else None)
            r = rule(kind, it, it.cond, **extra)
            if it.actions is None:
                global_shadows.append(r)
            else:
                for a in it.actions:
                    specific_shadows[a.value].append(r)
            continue
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
            # an escalation that names no action also applies to chat: by default a matching chat
            # is answered and sent for review (`on chat review`), not held (docs/language.md)
            r = rule("escalate", it, it.cond,
                     obligation=_obligation(it.hold, chat="review" if it.actions is None else "hold"))
            if it.actions is None:
                global_holds.append(r)
            else:
                for a in it.actions:
                    specific[a.value]["hold"].append(r)
                    named.add(a.value)
        elif isinstance(it, ast.Verify):
            r = rule("verify", it, it.cond, obligation=_obligation(it.hold), models=tuple(m.value for m in it.models),
                     threshold=_verify_threshold(it.escalate), divergence_cond=compile_expr(it.escalate), tag=it.tag,
                     judge=it.judge.model.value if it.judge is not None else None,
                     judge_fallback=tuple(m.value for m in it.judge.fallback) if it.judge is not None else (),
                     judge_timeout=float(it.judge.seconds) if it.judge is not None and it.judge.seconds is not None
                     else None)
            if it.actions is None:
                global_holds.append(r)
            else:
                for a in it.actions:
                    specific[a.value]["hold"].append(r)
                    named.add(a.value)
        elif isinstance(it, ast.Route):
            # a route serves what its primary serves: chat routes, embeddings routes, or both
            if _serves(models, it.primary.value, CHAT):
                if it.cond is None:
                    default_route = default_route or it
                else:
                    routes.append(it)
            if _serves(models, it.primary.value, EMBEDDINGS):
                embed_routes.append(it)
        elif isinstance(it, ast.AllowChoice):
            policy.choices.append(CompiledChoice(
                rule_id=_rule_id(it.span), span=_sspan(it.span), source=_source(by_file, it.span),
                cond=compile_expr(it.cond) if it.cond is not None else None, models=tuple(m.value for m in it.models)))

    def by_order(rs: list[CompiledRule]) -> tuple[CompiledRule, ...]:
        return tuple(sorted({id(r): r for r in rs}.values(), key=lambda r: r.order)) if rs else ()

    # Every plan holds the global holds too. An action with no hold of its own shares the one
    # sorted tuple (thousands of actions x thousands of global escalations were sorted and
    # de-duplicated again per action: quadratic); one with its own merges two sorted runs (the
    # two are disjoint: a rule is global exactly when it names no action).
    global_sorted = by_order(global_holds)
    order_of = attrgetter("order")
    for a, groups in specific.items():
        yield
        own = by_order(groups["hold"])
        holds = tuple(sorted(own + global_sorted, key=order_of)) if own and global_sorted else own or global_sorted
        policy.plans[a] = ActionPlan(
            denies=by_order(groups["deny"]), holds=holds, authorizes=by_order(groups["auth"]), named=True,
        )
    policy.global_plan = ActionPlan(holds=global_sorted)
    policy.actions = frozenset(named)
    if CHAT not in policy.plans:
        policy.plans[CHAT] = ActionPlan(holds=policy.global_plan.holds, named=True)
    if global_shadows or specific_shadows:
        _add_shadows(policy, specific_shadows, by_order(global_shadows))

    # routes
    default_fallback: tuple[str, ...] = ()
    if default_route is not None:
        default_fallback = tuple(n.value for n in (default_route.fallback or ()))
        policy.default_route = _route(by_file, default_route, default_route.primary.value, default_fallback)
        default_fallback = (default_route.primary.value, *default_fallback)
    index: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    scan: list[int] = []
    for i, rt in enumerate(routes):
        yield
        fb = tuple(n.value for n in rt.fallback) if rt.fallback is not None else default_fallback
        policy.routes.append(_route(by_file, rt, rt.primary.value, fb))
        key = _index_key(rt.cond)
        if key is not None and _route_key(key[0]) is not None:
            for v in key[1]:
                index[key[0]][v].append(i)
        else:
            scan.append(i)
    for path, table in index.items():
        key_of = _route_key(path)
        assert key_of is not None
        policy.route_index[path] = (key_of, {v: tuple(ix) for v, ix in table.items()})
    policy.route_scan = tuple(scan)
    rs: set[str] = set()
    for rt in routes:
        yield
        rs |= signals_of(rt.cond)
    for it in items:
        if isinstance(it, ast.AllowChoice):
            yield
            rs |= signals_of(it.cond)
    for lm in policy.limits:
        rs |= lm.signals
    policy.route_signals = frozenset(rs)
    _embedding_routes(policy, by_file, embed_routes)
    return policy


def _add_shadows(policy: PolicyIR, specific: dict[str, list[CompiledRule]],
                 global_shadows: tuple[CompiledRule, ...]) -> None:
    """Give every plan its shadow rules: the ones naming its action plus those naming none, in
    source order. An action only shadow rules name gets a plan of its own that enforces exactly
    what the global plan enforces (`named` stays false)."""
    for a in specific:
        if a not in policy.plans:
            policy.plans[a] = replace(policy.global_plan)
    for a, plan in policy.plans.items():
        own = tuple(specific.get(a, ()))
        shadows = tuple(sorted({id(r): r for r in (*own, *global_shadows)}.values(), key=attrgetter("order")))
        if shadows:
            policy.plans[a] = replace(plan, shadows=shadows)
    if global_shadows:
        policy.global_plan = replace(policy.global_plan, shadows=global_shadows)


def _serves(models: dict[str, ModelSpec], name: str, kind: str) -> bool:
    """Whether model `name` serves `kind` (an undeclared model is a chat model: the checker
    reports it)."""
    spec = models.get(name)
    return kind in (spec.serves if spec is not None else (CHAT,))


def _embedding_routes(policy: PolicyIR, by_file: dict[str, list[str]], routes: list[ast.Route]) -> None:
    """The routes of embeddings requests (those whose primary serves embeddings), each chain kept
    to the models that serve embeddings; a conditional route without its own fallback inherits
    the embeddings default's."""
    default = next((r for r in routes if r.cond is None), None)
    models = policy.models

    def chain_of(names: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(n for n in names if _serves(models, n, EMBEDDINGS))

    inherited: tuple[str, ...] = ()
    if default is not None:
        fb = chain_of(tuple(n.value for n in (default.fallback or ())))
        policy.embedding_default = _route(by_file, default, default.primary.value, fb)
        inherited = (default.primary.value, *fb)
    for rt in routes:
        if rt.cond is None:
            continue
        fb = chain_of(tuple(n.value for n in rt.fallback)) if rt.fallback is not None else inherited
        policy.embedding_routes.append(_route(by_file, rt, rt.primary.value, fb))


def window_seconds(window: str) -> int:
    """A checked limit window in seconds (`minute` 60, `2s` 2); 0 for `month` (the calendar month)."""
    if window in WINDOWS:
        return WINDOWS[window]
    return int(parse_duration(window))


def compile_limit(by_file: dict[str, list[str]], lm: ast.Limit) -> CompiledLimit:
    """A checked `limit` / `budget` statement as the gateway counts it."""
    if lm.kind == "spend":
        amount, currency = lm.amount.value  # type: ignore[misc]
        units = int(amount * MICRO)
    else:
        units, currency = int(lm.amount.value), None  # type: ignore[call-overload]
    # budgets fail closed (money), rate limits open, unless the block says otherwise
    kw: dict[str, Any] = {"fail_open": lm.kind != "spend"}
    notify: list[tuple[float, tuple[Any, ...]]] = []
    for li in lm.items or ():
        if li.kind == "notify":
            notify.append((float(li.percent or 0), tuple(Channel(kind=c.kind, target=c.target)  # type: ignore[arg-type]
                                                          for c in li.channels)))
        elif li.kind == "action":
            kw.update(on_limit=li.action, cap_percent=float(li.percent or 100), group=li.group)
        elif li.kind == "outage":
            kw["fail_open"] = bool(li.fail_open)
    notify.sort(key=lambda n: n[0])
    cap = int(units * Decimal(str(kw.get("cap_percent", 100.0))) / 100)
    return CompiledLimit(
        rule_id=_rule_id(lm.span), span=_sspan(lm.span), source=_source(by_file, lm.span), kind=lm.kind,
        amount=units, limit_text=lm.amount.raw, currency=currency, window=lm.window.value,
        window_s=window_seconds(lm.window.value), scope=tuple(n.value for n in lm.scope),
        models=frozenset(m.value for m in lm.models) if lm.models is not None else None,
        cond=compile_expr(lm.cond) if lm.cond is not None else None, notify=tuple(notify),
        signals=signals_of(lm.cond), cap=cap, shadow=lm.shadow,
        thresholds=tuple(int(units * Decimal(str(pct)) / 100) for pct, _ in notify), **kw)


def _route(by_file: dict[str, list[str]], rt: ast.Route, primary: str, fallback: tuple[str, ...]) -> CompiledRoute:
    chain = tuple(dict.fromkeys((primary, *fallback)))
    return CompiledRoute(
        rule_id=_rule_id(rt.span), span=_sspan(rt.span), source=_source(by_file, rt.span),
        cond=compile_expr(rt.cond) if rt.cond is not None else None, chain=chain, sticky=rt.sticky,
        sticky_return=rt.sticky_return, prefer_self_hosted=rt.prefer_self_hosted,
        rate_limit_wait=float(rt.rate_limit_wait) if rt.rate_limit_wait is not None else None,
        hedge_after=float(rt.hedge.after.value) if rt.hedge is not None else None,
        hedge_budget=float(rt.hedge.budget.value) if rt.hedge is not None and rt.hedge.budget is not None else 0.1,
    )


__all__ = [
    "as_bool",
    "as_money",
    "as_number",
    "as_seconds",
    "compile_expr",
    "compile_files",
    "compile_limit",
    "compile_steps",
    "content_hash",
    "lexicon_regex",
    "model_spec",
    "show",
    "signals_of",
    "window_seconds",
]
