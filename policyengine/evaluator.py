"""The compiled policy set and its pure, synchronous `evaluate(action) -> Decision`.

Precedence (fixed): deny > escalate / require approval > authorize (allow) > default deny.
Within the middle level escalate wins over require_approval when both fire; every
obligation of every rule that fired at that level is returned.

Rules are indexed by action name at compile time, routes by the fields they test,
so a decision evaluates only the rules that can apply. Signals are pulled from the
provider lazily, only when a rule being evaluated needs one, and values supplied in
`action.signals` always win. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from policyengine.dsl.conditions import Cond, show
from policyengine.dsl.fields import MISSING
from policyengine.fastmodel import construct  # every Decision part: values the compiler checked
from policyengine.signals.base import SignalProvider
from policyengine.types import (
    Action,
    ApprovalObligation,
    Decision,
    ModelSpec,
    Routing,
    RuleHit,
    SourceSpan,
    Verification,
)

CHAT = "chat"

_MENTION_KEYS: dict[str, str] = {}


def _hit(rule_id: str, kind: str, effect: str | None, span: SourceSpan | None, source: str,
         because: list[str]) -> RuleHit:
    return construct(RuleHit, {"rule_id": rule_id, "kind": kind, "effect": effect, "span": span, "source": source,
                           "because": because})


def _routing(chain: list[str], sticky: bool = False, sticky_return: bool = False, prefer: bool = False,
             rule_id: str | None = None) -> Routing:
    return construct(Routing, {"chain": chain, "sticky": sticky, "sticky_return": sticky_return,
                           "prefer_self_hosted": prefer, "rule_id": rule_id})


@dataclass(slots=True)
class CompiledRule:
    kind: str  # deny | require_approval | escalate | authorize | verify
    rule_id: str
    span: SourceSpan
    source: str
    cond: Cond | None
    order: int
    obligation: dict[str, Any] | None = None  # ApprovalObligation fields
    signals: frozenset[str] = frozenset()  # signals the condition may read
    restrictive: bool = True  # an undecidable condition fires the rule (all but authorize)
    # verify only
    models: tuple[str, ...] = ()
    threshold: float | None = None
    divergence_cond: Cond | None = None
    tag: str | None = None

    def hit(self, because: list[str], effect: str | None = None, kind: str | None = None) -> RuleHit:
        return _hit(self.rule_id, kind or self.kind, effect, self.span, self.source, because)

    def test(self, ctx: EvalContext) -> list[str] | None:
        """The comparisons that made the rule fire, or None if it does not."""
        because: list[str] = []
        cond = self.cond
        if cond is None:
            return because
        r = cond(ctx, because)
        if r is True:
            return because
        if r is None and self.restrictive:
            because.append("undecidable condition treated as matching (fail-safe)")
            return because
        return None


@dataclass(slots=True)
class CompiledRoute:
    rule_id: str
    span: SourceSpan
    source: str
    cond: Cond | None
    order: int
    chain: tuple[str, ...]
    sticky: bool
    sticky_return: bool
    prefer_self_hosted: bool


@dataclass(slots=True)
class CompiledChoice:
    rule_id: str
    span: SourceSpan
    source: str
    cond: Cond | None
    models: tuple[str, ...]


@dataclass(slots=True)
class ActionPlan:
    """The rules that can apply to one action name, each list in source order."""

    denies: tuple[CompiledRule, ...] = ()
    holds: tuple[CompiledRule, ...] = ()  # require_approval, escalate, verify
    authorizes: tuple[CompiledRule, ...] = ()
    named: bool = False  # some rule names this action explicitly


class EvalContext:
    """Per-decision state: lazy signal cache, notes. Not shared between decisions."""

    __slots__ = ("action", "notes", "policy", "provider", "signals")

    def __init__(self, action: Action, provider: SignalProvider | None, policy: CompiledPolicy) -> None:
        self.action = action
        self.provider = provider
        self.policy = policy
        self.signals: dict[str, Any] = {}
        self.notes: list[str] = []

    def signal(self, name: str) -> Any:
        if name in self.signals:
            v = self.signals[name]
            return MISSING if v is None else v
        supplied = self.action.signals.get(name, MISSING)
        if supplied is not MISSING and supplied is not None:
            self.signals[name] = supplied
            return supplied
        v: Any = None
        p = self.provider
        if p is None:
            self.notes.append(f"signal {name} not supplied and no signal provider: rules on {name} did not fire")
        elif name == "sentiment":
            if not self.action.text:
                self.notes.append("signal sentiment not computed: the action has no text")
            else:
                v = self._call(name, p.sentiment, self.action.text)
        elif name == "confidence":
            v = self._call(name, p.confidence, self.action.text, self.action.fields)
            if v is None:
                self.notes.append("signal confidence not supplied: rules on confidence did not fire")
        else:
            self.notes.append(f"signal {name} not supplied: rules on {name} did not fire")
        self.signals[name] = v
        return MISSING if v is None else v

    def _call(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as e:  # a broken provider must not break the decision
            self.notes.append(f"signal {name} provider failed ({type(e).__name__}): rules on {name} did not fire")
            return None

    def mention(self, lexicon: str, text: str | None, path: str) -> str | None:
        """Does `text` mention the lexicon? Supplied values win: `signals["mentions:LEX"]`
        (a MentionMatch/dict, true/false, or None = computed, no match), `"mentions.LEX"`,
        or `signals["mentions"][LEX]`. Otherwise the provider, else exact phrase matching."""
        key = _MENTION_KEYS.get(lexicon) or _MENTION_KEYS.setdefault(lexicon, f"mentions:{lexicon}")
        sig = self.action.signals
        is_text = path == "text"
        if is_text and key in self.signals:
            return _mention_text(self.signals[key])
        sup: Any = MISSING
        if is_text and sig:
            if key in sig:
                sup = sig[key]
            elif f"mentions.{lexicon}" in sig:
                sup = sig[f"mentions.{lexicon}"]
            elif isinstance(sig.get("mentions"), dict) and lexicon in sig["mentions"]:
                sup = sig["mentions"][lexicon]
        if sup is not MISSING:
            if hasattr(sup, "model_dump"):
                sup = sup.model_dump()
            self.signals[key] = sup
            return _mention_text(sup)
        if not text:
            if path == "text":
                self.signals[key] = None
            return None
        phrases = self.policy.lexicons[lexicon]
        found: dict[str, Any] | None = None
        if self.provider is not None:
            try:
                mm = self.provider.mentions(text, lexicon, phrases)
            except Exception as e:
                self.notes.append(f"mentions provider failed ({type(e).__name__}); used exact phrase matching")
                found = _lexical(self.policy.lexicon_res[lexicon], text)
            else:
                found = mm.model_dump() if mm is not None else None
        else:
            found = _lexical(self.policy.lexicon_res[lexicon], text)
        self.signals[key if path == "text" else f"{key}@{path}"] = found
        return _mention_text(found)


def _mention_text(v: Any) -> str | None:
    if v is None or v is False or v == "" or v == {}:
        return None
    if isinstance(v, dict):
        m = v.get("matched_text")
        p = v.get("phrase")
        return f"{m!r} ~ {p!r}" if m is not None and p is not None else "supplied"
    if v is True:
        return "supplied"
    return f"supplied: {v}"


def _lexical(rx: re.Pattern[str], text: str) -> dict[str, Any] | None:
    m = rx.search(text)
    if not m:
        return None
    return {"phrase": " ".join(m.group(0).lower().split()), "matched_text": m.group(0), "start": m.start(),
            "end": m.end(), "method": "lexical", "score": 1.0}


def lexicon_regex(phrases: list[str]) -> re.Pattern[str]:
    """Whole-word, case-insensitive, whitespace-tolerant match of any phrase."""
    alts = sorted({r"\s+".join(map(re.escape, p.split())) for p in phrases if p.strip()}, key=len, reverse=True)
    if not alts:
        return re.compile(r"(?!x)x")
    return re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)", re.IGNORECASE)


@dataclass
class CompiledPolicy:
    name: str
    version: int | str | None
    hash: str
    models: dict[str, ModelSpec]
    lexicons: dict[str, list[str]]
    sources: dict[str, str]
    plans: dict[str, ActionPlan] = field(default_factory=dict)
    global_plan: ActionPlan = field(default_factory=ActionPlan)
    routes: list[CompiledRoute] = field(default_factory=list)
    default_route: CompiledRoute | None = None
    route_index: dict[str, tuple[Callable[[Action], Any], dict[str, tuple[int, ...]]]] = field(default_factory=dict)
    route_scan: tuple[int, ...] = ()
    choices: list[CompiledChoice] = field(default_factory=list)
    lexicon_res: dict[str, re.Pattern[str]] = field(default_factory=dict)
    actions: frozenset[str] = frozenset()
    route_signals: frozenset[str] = frozenset()
    _needed: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ API
    def evaluate(self, action: Action, signals: SignalProvider | None = None) -> Decision:
        ctx = EvalContext(action, signals, self)
        name = action.action
        plan = self.plans.get(name, self.global_plan)
        hits: list[RuleHit] = []

        for r in plan.denies:
            because = r.test(ctx)
            if because is not None:
                hits.append(r.hit(because, "deny"))
        if hits:
            return self._decision(ctx, "deny", hits)

        routing: Routing | None = None
        allowed: list[str] = []
        if name == CHAT:
            routing, allowed, route_hits, refusal = self._route(ctx)
            hits.extend(route_hits)
            if refusal is not None:
                hits.append(refusal)
                return self._decision(ctx, "deny", hits, routing=routing, allowed=allowed)

        obligations: list[ApprovalObligation] = []
        escalated = approval = False
        tags: list[str] = []
        verification: Verification | None = None
        for r in plan.holds:
            because = r.test(ctx)
            if because is None:
                continue
            if r.kind == "verify":
                div = ctx.action.signals.get("divergence")
                if div is None:
                    hits.append(r.hit(because, None))
                    if verification is None:
                        verification = construct(Verification, {"models": list(r.models), "threshold": r.threshold,
                                                             "tag": r.tag, "rule_id": r.rule_id})
                    continue
                vb: list[str] = []
                assert r.divergence_cond is not None
                res = r.divergence_cond(ctx, vb)
                if res is not False:
                    escalated = True
                    hits.append(r.hit(because + vb, "escalate"))
                    obligations.append(self._obligation(r))
                else:
                    ctx.signals["divergence"] = div
                    hits.append(r.hit([*because, f"divergence {div} within threshold {r.threshold:g}"], None))
                    if r.tag and r.tag not in tags:
                        tags.append(r.tag)
                continue
            if r.kind == "escalate":
                escalated = True
                hits.append(r.hit(because, "escalate"))
            else:
                approval = True
                hits.append(r.hit(because, "require_approval"))
            obligations.append(self._obligation(r))
        if escalated or approval:
            effect = "escalate" if escalated else "require_approval"
            return self._decision(ctx, effect, hits, routing=routing, allowed=allowed, obligations=obligations,
                                  tags=tags, verification=verification)

        for r in plan.authorizes:
            because = r.test(ctx)
            if because is not None:
                hits.append(r.hit(because, "allow"))
                break
        else:
            if name != CHAT:
                default = _hit("default", "default", "deny", None, "",
                               [f"no rule authorizes {name!r}: default deny"
                                + ("" if plan.named else " (no rule names this action)")])
                hits.append(default)
                return self._decision(ctx, "deny", hits, default_applied=not plan.named)
        return self._decision(ctx, "allow", hits, routing=routing, allowed=allowed, tags=tags,
                              verification=verification)

    def route(self, action: Action) -> Routing:
        """The model chain for a model call by this caller (empty if none applies)."""
        routing, _, _, _ = self._route(EvalContext(action, None, self))
        return routing or Routing()

    def allowed_models(self, action: Action) -> list[str]:
        """The user-switchable allowlist for this caller (union of matching `allow model choice`)."""
        return self._allowed(EvalContext(action, None, self))[0]

    def signals_needed(self, action: Action | str) -> set[str]:
        """Signals a decision on this action may need, named as `policyengine.signals.precompute`
        expects them: "sentiment", "confidence", "mentions:<lexicon>". (Divergence is never
        listed: it comes from running the verification.) Already-supplied values need not be computed."""
        name = action if isinstance(action, str) else action.action
        cached = self._needed.get(name)
        if cached is None:
            plan = self.plans.get(name, self.global_plan)
            needed: set[str] = set()
            for r in (*plan.denies, *plan.holds, *plan.authorizes):
                needed |= r.signals
            if name == CHAT:
                needed |= self.route_signals
            needed.discard("divergence")
            cached = self._needed[name] = frozenset(needed)
        supplied = action.signals if isinstance(action, Action) else {}
        return {s for s in cached if s not in supplied}

    # ------------------------------------------------------------------ internals
    def _allowed(self, ctx: EvalContext) -> tuple[list[str], list[RuleHit]]:
        out: list[str] = []
        hits: list[RuleHit] = []
        for c in self.choices:
            because: list[str] = []
            if c.cond is None or c.cond(ctx, because) is True:
                for m in c.models:
                    if m not in out:
                        out.append(m)
                hits.append(_hit(c.rule_id, "allow_choice", None, c.span, c.source, because))
        return out, hits

    def _match_route(self, ctx: EvalContext) -> tuple[CompiledRoute | None, list[str]]:
        a = ctx.action
        cands: list[int] = list(self.route_scan)
        for get, table in self.route_index.values():
            v = get(a)
            if v is not None and v is not MISSING:
                hit = table.get(v if isinstance(v, str) else show(v))  # as the conditions compare
                if hit:
                    cands.extend(hit)
        if len(cands) > 1:
            cands.sort()
        for i in cands:
            r = self.routes[i]
            because: list[str] = []
            if r.cond is None or r.cond(ctx, because) is True:
                return r, because
        if self.default_route is not None:
            return self.default_route, ["no earlier route matched: default route"]
        return None, []

    def _route(self, ctx: EvalContext) -> tuple[Routing | None, list[str], list[RuleHit], RuleHit | None]:
        a = ctx.action
        hits: list[RuleHit] = []
        r, because = self._match_route(ctx)
        allowed: list[str] = []
        choice_hits: list[RuleHit] = []
        if self.choices:
            allowed, choice_hits = self._allowed(ctx)
        if r is None:
            refusal = _hit("route", "route", "deny", None, "",
                           ["no route matches this request and the policy has no `route default`"])
            return None, allowed, hits, refusal
        chain = list(r.chain)
        if r.prefer_self_hosted:
            chain.sort(key=lambda m: 0 if self.models[m].self_hosted else 1)
            because.append("prefer self_hosted: cost-0 models first")
        refusal: RuleHit | None = None
        if a.requested_model:
            req = a.requested_model
            if req in allowed:
                chain = [req, *(m for m in chain if m != req)]
                hits.extend(choice_hits)
                because.append(f"requested model {req} is on this caller's allowlist: primary")
            elif chain and req == chain[0]:
                because.append(f"requested model {req} is the route's own primary")
            else:
                why = (f"requested model {req!r} is not on this caller's allowlist {allowed}" if allowed
                       else f"requested model {req!r}: this caller may not choose a model (no `allow model choice` applies)")
                refusal = _hit("allow_choice", "allow_choice", "deny", None, "", [why])
        if a.prompt_tokens is not None:
            kept = []
            for m in chain:
                ctxw = self.models[m].context
                if ctxw is not None and ctxw < a.prompt_tokens:
                    because.append(f"dropped {m}: context {ctxw} < {a.prompt_tokens} prompt tokens")
                else:
                    kept.append(m)
            chain = kept
            if not chain and refusal is None:
                refusal = _hit(r.rule_id, "route", "deny", r.span, r.source,
                               [*because, f"no model in the chain has a context window of {a.prompt_tokens} tokens"])
        routing = _routing(chain, r.sticky, r.sticky_return, r.prefer_self_hosted, r.rule_id)
        hits.append(_hit(r.rule_id, "route", None, r.span, r.source, because))
        return routing, allowed, hits, refusal

    @staticmethod
    def _obligation(r: CompiledRule) -> ApprovalObligation:
        o = r.obligation or {}
        return construct(ApprovalObligation, {
            "group": o.get("group"), "channels": list(o.get("channels", ())), "remind_every_s": o.get("remind_every_s"),
            "timeout_s": o.get("timeout_s"), "on_timeout": o.get("on_timeout", "deny"),
            "escalate_to": o.get("escalate_to"), "rule_id": r.rule_id,
        })

    def _decision(self, ctx: EvalContext, effect: str, hits: list[RuleHit], *, routing: Routing | None = None,
                  allowed: list[str] | None = None, obligations: list[ApprovalObligation] | None = None,
                  tags: list[str] | None = None, verification: Verification | None = None,
                  default_applied: bool = False) -> Decision:
        return construct(Decision, {
            "effect": effect, "action": ctx.action.action, "routing": routing or _routing([]), "rules": hits,
            "obligations": obligations or [], "tags": tags or [], "signals": ctx.signals,
            "verification": verification, "allowed_models": allowed or [], "default_applied": default_applied,
            "policy_name": self.name, "policy_version": self.version, "policy_hash": self.hash, "notes": ctx.notes,
        })
