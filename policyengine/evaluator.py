"""The evaluator: `CompiledPolicy.evaluate(action) -> Decision`, pure and synchronous.

`CompiledPolicy` is the compiled form (`policyengine.ir.PolicyIR`, built by
`policyengine.dsl`) with the methods that decide. `EvalContext` is the per-decision
state compiled conditions read through (`policyengine.ir.ConditionContext`): the lazy
signal cache, lexicon mentions, notes. This module imports `policyengine.ir`, never
`policyengine.dsl`; nothing here does I/O.

Precedence (fixed): deny > escalate / require approval > authorize (allow) > default
deny; `CompiledPolicy.evaluate` states it exactly.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from policyengine.fastmodel import construct  # every Decision part: values the compiler checked
from policyengine.ir import (
    CHAT,
    EMBEDDINGS,
    MICRO,
    MISSING,
    ROUTED,
    ActionPlan,
    CompiledLimit,
    CompiledRoute,
    CompiledRule,
    PolicyIR,
    mention_mode,
    mention_signal,
)
from policyengine.signals.base import SignalProvider
from policyengine.types import (
    Action,
    ApprovalObligation,
    Decision,
    LimitHit,
    Routing,
    RuleHit,
    SourceSpan,
    Verification,
    parse_money,
)

_MENTION_KEYS: dict[str, str] = {}


def _hit(rule_id: str, kind: str, effect: str | None, span: SourceSpan | None, source: str,
         because: list[str]) -> RuleHit:
    return construct(RuleHit, {"rule_id": rule_id, "kind": kind, "effect": effect, "span": span, "source": source,
                           "because": because})


def _routing(chain: list[str], sticky: bool = False, sticky_return: bool = False, prefer: bool = False,
             rule_id: str | None = None, rate_limit_wait: float | None = None, hedge_after: float | None = None,
             hedge_budget: float = 0.1) -> Routing:
    return construct(Routing, {"chain": chain, "sticky": sticky, "sticky_return": sticky_return,
                           "prefer_self_hosted": prefer, "rule_id": rule_id, "rate_limit_wait": rate_limit_wait,
                           "hedge_after": hedge_after, "hedge_budget": hedge_budget})


def _rule_hit(r: CompiledRule, because: list[str], effect: str | None) -> RuleHit:
    return _hit(r.rule_id, r.kind, effect, r.span, r.source, because)


def _fires(r: CompiledRule, ctx: EvalContext) -> list[str] | None:
    """The comparisons that made the rule fire, or None if it does not. A restrictive
    rule fires on an undecidable condition, and says so."""
    because: list[str] = []
    cond = r.cond
    if cond is None:
        return because
    res = cond(ctx, because)
    if res is True:
        return because
    if res is None and r.restrictive:
        because.append("undecidable condition treated as matching (fail-safe)")
        return because
    return None


class EvalContext:
    """Per-decision state: the lazy signal cache and the notes. Not shared between decisions.

    Implements `policyengine.ir.ConditionContext`. `signals` ends up holding every
    signal value the decision read (None: not available), under the names
    `Decision.signals` uses; `notes` every explanation that is not a rule hit.
    """

    __slots__ = ("action", "notes", "policy", "provider", "signals")

    def __init__(self, action: Action, provider: SignalProvider | None, policy: PolicyIR) -> None:
        self.action = action
        self.provider = provider
        self.policy = policy
        self.signals: dict[str, Any] = {}
        self.notes: list[str] = []

    def signal(self, name: str) -> Any:
        """The value of signal `name`, or MISSING. A value supplied in `action.signals` wins;
        else sentiment and confidence are asked of the provider, once per decision; a
        signal that cannot be had is noted. A failing provider never raises here."""
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

    def mention(self, lexicon: str, text: str | None, path: str, mode: str = "words") -> str | None:
        """Does `text` mention the lexicon in `mode` (`words`, `intent`, `both`)? Supplied values
        win: `signals["mentions:LEX:MODE"]` for an explicit mode, then `signals["mentions:LEX"]`
        (a MentionMatch/dict, true/false, or None = computed, no match), `"mentions.LEX"`, or
        `signals["mentions"][LEX]`. Otherwise the provider (`mention_intent` for intent and
        both; a provider without it decides by words, noted), else exact phrase matching."""
        if mode != "words":
            return self._mention_intent(lexicon, text, path, mode)
        key = _MENTION_KEYS.get(lexicon) or _MENTION_KEYS.setdefault(lexicon, f"mentions:{lexicon}")
        if mention_mode(lexicon, None) != "words":
            key = f"{key}:words"  # `by words` on a lexicon whose default is intent-aware
        sig = self.action.signals
        is_text = path == "text"
        if is_text and key in self.signals:
            return _mention_text(self.signals[key])
        sup: Any = MISSING
        if is_text and sig:
            if key in sig:
                sup = sig[key]
            elif key != f"mentions:{lexicon}" and f"mentions:{lexicon}" in sig:
                sup = sig[f"mentions:{lexicon}"]
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

    def _mention_intent(self, lexicon: str, text: str | None, path: str, mode: str) -> str | None:
        key = mention_signal(lexicon, mode)
        sig = self.action.signals
        if path == "text":
            if key in self.signals:
                return _mention_text(self.signals[key])
            for k in dict.fromkeys((key, f"mentions:{lexicon}")):
                if sig and k in sig:
                    sup = sig[k]
                    if hasattr(sup, "model_dump"):
                        sup = sup.model_dump()
                    self.signals[key] = sup
                    return _mention_text(sup)
        if not text:
            if path == "text":
                self.signals[key] = None
            return None
        fn = getattr(self.provider, "mention_intent", None)
        if fn is None:
            self.notes.append(f"mentions {lexicon} by {mode}: the signal provider has no intent model; decided by words")
            return self._by_words_instead(lexicon, text, path, key)
        try:
            mm = fn(text, lexicon, self.policy.lexicons[lexicon], mode)
        except Exception as e:
            self.notes.append(f"mentions {lexicon} by {mode}: provider failed ({type(e).__name__}); decided by words")
            return self._by_words_instead(lexicon, text, path, key)
        found = mm.model_dump() if mm is not None else None
        self.signals[key if path == "text" else f"{key}@{path}"] = found
        return _mention_text(found)

    def _by_words_instead(self, lexicon: str, text: str, path: str, key: str) -> str | None:
        """Decide an intent mention by words; the decision's signals carry it under the intent key too."""
        words_key = f"mentions:{lexicon}:words"
        had = words_key in self.signals
        found = self.mention(lexicon, text, path)
        if path == "text" and words_key in self.signals:
            # recorded under the key the rule reads (the one replay and dry-run know), not as a
            # `by words` result nobody asked for
            self.signals[key] = self.signals[words_key] if had else self.signals.pop(words_key)
        return found


def _mention_text(v: Any) -> str | None:
    if v is None or v is False or v == "" or v == {}:
        return None
    if isinstance(v, dict):
        m = v.get("matched_text")
        p = v.get("phrase")
        words = f"{m!r} ~ {p!r}" if m is not None and p is not None else None
        if v.get("intent") is not None:
            said = f"intent {float(v['intent']):.2f}: {v.get('evidence')!r}"
            return f"{said}; words {words}" if words else said
        return words or "supplied"
    if v is True:
        return "supplied"
    return f"supplied: {v}"


def _units(lm: CompiledLimit, value: Any) -> int:
    """A usage value in a limit's counter units (money: micro-units of the budget's currency)."""
    if lm.kind == "spend":
        m = parse_money(value)
        if m is None:
            raise ValueError(f"usage of {lm.rule_id} ({lm.limit_text}) must be money, e.g. \"10 {lm.currency}\"; "
                             f"got {value!r}")
        if m[1] != lm.currency:
            raise ValueError(f"usage of {lm.rule_id} is in {m[1]}, the budget in {lm.currency}")
        return int(m[0] * MICRO)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"usage of {lm.rule_id} ({lm.kind}) must be a number, got {value!r}")
    return int(value)


def _lexical(rx: re.Pattern[str], text: str) -> dict[str, Any] | None:
    m = rx.search(text)
    if not m:
        return None
    return {"phrase": " ".join(m.group(0).lower().split()), "matched_text": m.group(0), "start": m.start(),
            "end": m.end(), "method": "lexical", "score": 1.0}


@dataclass
class CompiledPolicy(PolicyIR):
    """A compiled policy set that decides: `policyengine.ir.PolicyIR` plus `evaluate`,
    `route`, `allowed_models` and `signals_needed`. Built by `policyengine.dsl`
    (`load_policy_set`, `compile_sources`); never changed by deciding, except for the
    per-action cache behind `signals_needed` and the shared `LimitHit`s. Safe to share between threads.
    """

    _needed: dict[str, frozenset[str]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _limit_ix: dict[str, CompiledLimit] | None = field(default=None, init=False, repr=False, compare=False)
    # (rule id, primary) -> its LimitHit: a hit holds nothing of the request, so one is shared (never changed)
    _limit_hits: dict[tuple[str, str | None], LimitHit] = field(default_factory=dict, init=False, repr=False,
                                                                compare=False)

    @classmethod
    def from_ir(cls, ir: PolicyIR) -> CompiledPolicy:
        """The policy set `ir` describes, ready to decide (its parts are shared, not copied)."""
        return cls(**{f.name: getattr(ir, f.name) for f in fields(PolicyIR)})

    # ------------------------------------------------------------------ API
    def evaluate(self, action: Action, signals: SignalProvider | None = None) -> Decision:
        """Decide `action`: pure and synchronous, no I/O; never raises on action data.

        Only the rules that can apply are tested: those naming `action.action`, plus the
        `escalate` and `verify` rules without `for` (for an action no rule names, only
        those). Each level below tests its rules in source order and stops the
        evaluation when its effect is reached:

        1. **deny**: every `deny` rule that fires is recorded and the effect is `deny`.
           Nothing else is evaluated (no routing, no signals beyond the deny conditions').
        2. **routing**, for `chat` only: the first route whose condition is true, else
           `route default`; `prefer self_hosted` puts cost-0 models first; a requested
           model on the caller's `allow model choice` allowlist becomes the primary;
           models whose context window is smaller than `prompt_tokens` are dropped. No
           matching route, a requested model that is neither allowed nor the route's
           primary, or an empty chain after the drop is `deny` (routing and allowlist
           kept in the decision).
        3. **escalate / require_approval**: every `require approval`, `escalate` and
           `verify` rule that fires applies. A verify rule whose `divergence` is not
           supplied in `action.signals` asks for verification (`verification`: the first
           such rule's models, threshold, tag) and holds nothing; with `divergence`
           supplied, an escalation condition that is true or undecidable escalates (with
           the rule's obligation), a false one adds the rule's tag. When any of them
           held, the effect is `escalate` if an escalate or verify rule escalated, else
           `require_approval`, with **every** obligation of every rule that held, the
           tags and the verification.
        4. **authorize**: the first `authorize` rule that fires gives `allow`.
        5. **default deny**: with no authorize rule firing, any action but the model
           calls (`chat`, `embeddings`) is denied by the `default` hit (`default_applied` is
           true when no rule names the action at all); a model call is allowed by its route
           (`embeddings` by the routes whose primary `serves [embeddings]`).

        Restrictive rules (deny, require approval, escalate, verify) fire on an
        undecidable condition; authorize, routes and model choices do not.

        **Shadow** rules (`shadow deny ...`, `shadow authorize ...`...) are tested after the
        decision is made and never change it: those that fire are listed in `shadow` with their
        would-be effect, and `shadow_effect` is the effect the decision would have had with them
        enforced (`_shadow` states how).

        Signals are lazy: a value in `action.signals` always wins; otherwise sentiment,
        confidence and lexicon mentions are computed only when a condition being
        tested reads them, at most once per decision, through `signals` (lexicon
        mentions fall back to exact phrase matching without a provider). A signal
        that cannot be had makes its comparisons false, and a note says so.

        The Decision carries: `effect` (allow, deny, require_approval, escalate);
        `routing` (chat: the chain, primary first, stickiness, the route's rule id;
        empty otherwise); `rules`, every rule that applied as a RuleHit with the
        comparisons that made it fire (`because`), including route and model-choice
        hits; `obligations` of a held decision; `tags` and `verification` (on allow
        and held decisions); `signals`, every signal value the decision read (None:
        not available); `allowed_models` (chat: the caller's allowlist);
        `default_applied`; `notes`; and the policy's name, version and content hash.
        """
        ctx = EvalContext(action, signals, self)
        plan = self.plans.get(action.action, self.global_plan)
        d = self._decide(ctx, plan)
        if plan.shadows:
            d = self._shadow(ctx, plan, d)
        return d

    _SHADOW_EFFECT = {"deny": "deny", "require_approval": "require_approval", "escalate": "escalate",
                      "authorize": "allow"}

    def _shadow(self, ctx: EvalContext, plan: ActionPlan, d: Decision) -> Decision:
        """`d` with the plan's shadow rules that fire (`shadow`) and the effect the decision would
        have with them enforced (`shadow_effect`), by the fixed precedence: a shadow deny denies; a
        shadow escalate / approval holds what was allowed (escalate over approval); a shadow
        authorize allows what only the default deny refused; a shadow verify escalates when a supplied
        `divergence` passes its threshold (it never asks for verification: without one it is a hit
        with no effect). The enforced effect is never changed; signals a shadow condition read are
        recorded like any other. (Shadow limits are logged at their limit: `shadow_at_limit`.)"""
        hits = []
        for r in plan.shadows:
            because = _fires(r, ctx)
            if because is None:
                continue
            if r.kind == "verify":
                # would-be: escalate on a divergence past the threshold; never asks for verification
                div = ctx.action.signals.get("divergence")
                if div is None:
                    hits.append(_rule_hit(r, [*because, "would ask for dual-model verification (shadow: not run)"],
                                          None))
                    continue
                vb: list[str] = []
                assert r.divergence_cond is not None
                if r.divergence_cond(ctx, vb) is not False:
                    hits.append(_rule_hit(r, because + vb, "escalate"))
                else:
                    hits.append(_rule_hit(r, [*because, f"divergence {div} within threshold {r.threshold:g}"], None))
                continue
            hits.append(_rule_hit(r, because, self._SHADOW_EFFECT[r.kind]))
        if not hits:
            return d
        would = {h.effect for h in hits}
        effect = d.effect
        if "deny" in would:
            effect = "deny"
        elif effect == "deny":
            if "allow" in would and d.rules and d.rules[-1].kind == "default":
                effect = "allow"
        elif "escalate" in would:
            effect = "escalate"
        elif "require_approval" in would and effect == "allow":
            effect = "require_approval"
        return d.model_copy(update={"shadow": hits, "shadow_effect": effect, "signals": ctx.signals,
                                    "notes": ctx.notes})

    def _decide(self, ctx: EvalContext, plan: ActionPlan) -> Decision:
        """The enforced decision (see `evaluate`); shadow rules are not looked at here."""
        name = ctx.action.action
        hits: list[RuleHit] = []

        for r in plan.denies:
            because = _fires(r, ctx)
            if because is not None:
                hits.append(_rule_hit(r, because, "deny"))
        if hits:
            return self._decision(ctx, "deny", hits)

        routing: Routing | None = None
        allowed: list[str] = []
        if name in ROUTED:
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
            because = _fires(r, ctx)
            if because is None:
                continue
            if r.kind == "verify":
                div = ctx.action.signals.get("divergence")
                if div is None:
                    hits.append(_rule_hit(r, because, None))
                    if verification is None:
                        verification = construct(Verification, {"models": list(r.models), "threshold": r.threshold,
                                                             "tag": r.tag, "rule_id": r.rule_id, "judge": r.judge,
                                                             "judge_timeout": r.judge_timeout,
                                                             "judge_fallback": list(r.judge_fallback)})
                    continue
                vb: list[str] = []
                assert r.divergence_cond is not None
                res = r.divergence_cond(ctx, vb)
                if res is not False:
                    escalated = True
                    hits.append(_rule_hit(r, because + vb, "escalate"))
                    obligations.append(self._obligation(r))
                else:
                    ctx.signals["divergence"] = div
                    hits.append(_rule_hit(r, [*because, f"divergence {div} within threshold {r.threshold:g}"], None))
                    if r.tag and r.tag not in tags:
                        tags.append(r.tag)
                continue
            if r.kind == "escalate":
                escalated = True
                hits.append(_rule_hit(r, because, "escalate"))
            else:
                approval = True
                hits.append(_rule_hit(r, because, "require_approval"))
            obligations.append(self._obligation(r))
        limits = self._limits(ctx, routing) if name == CHAT and self.limits else None
        if escalated or approval:
            effect = "escalate" if escalated else "require_approval"
            return self._decision(ctx, effect, hits, routing=routing, allowed=allowed, obligations=obligations,
                                  tags=tags, verification=verification, limits=limits)

        for r in plan.authorizes:
            because = _fires(r, ctx)
            if because is not None:
                hits.append(_rule_hit(r, because, "allow"))
                break
        else:
            if name not in ROUTED:
                default = _hit("default", "default", "deny", None, "",
                               [f"no rule authorizes {name!r}: default deny"
                                + ("" if plan.named else " (no rule names this action)")])
                hits.append(default)
                return self._decision(ctx, "deny", hits, default_applied=not plan.named)
        return self._decision(ctx, "allow", hits, routing=routing, allowed=allowed, tags=tags,
                              verification=verification, limits=limits)

    def limits_for(self, action: Action, routing: Routing | None = None) -> list[LimitHit]:
        """The limits and budgets that count a model call by this caller on `routing` (default: the
        policy's route for it): those whose `on model` holds the chain's primary and whose
        condition is true or undecidable (a limit is restrictive: it counts when in doubt)."""
        ctx = EvalContext(action, None, self)
        return self._limits(ctx, routing if routing is not None else self.route(action))

    def limit(self, rule_id: str) -> CompiledLimit | None:
        """The compiled limit with this rule id, or None."""
        ix = self._limit_ix
        if ix is None:
            ix = self._limit_ix = {lm.rule_id: lm for lm in self.limits}
        return ix.get(rule_id)

    def at_limit(self, decision: Decision, exceeded: list[tuple[LimitHit, str]],
                 action: Action | None = None) -> Decision:
        """What `decision` becomes when the limits in `exceeded` (each with a sentence saying how far
        it is used, e.g. `spend 50.2 GBP of 50 GBP per day`) are at their `at N%`: pure.

        The strictest action wins: `deny` (effect deny, a `limit` hit; the transport answers 429),
        then `require_approval` (the over-limit request is held for a reviewer of the limit's
        group: the existing approvals), then `prefer_self_hosted` (the chain keeps only its cost-0
        models, else the policy's cost-0 models in declaration order; none: deny). The limits
        that led to a reroute are dropped from `limits` (a cost-0 call is not charged to them); given
        the `action`, the other limits are listed again for the new primary.
        """
        shadow = [(h, why) for h, why in exceeded if h.shadow]
        if shadow:
            decision = self.shadow_at_limit(decision, shadow)
            exceeded = [(h, why) for h, why in exceeded if not h.shadow]
        if not exceeded:
            return decision
        actions = {h.on_limit for h, _ in exceeded}
        over = [h.rule_id for h, _ in exceeded]
        if "deny" in actions or decision.effect == "deny":
            hits = [*decision.rules, *(_hit(h.rule_id, "limit", "deny" if h.on_limit == "deny" else None,
                                            self._span(h.rule_id), self._source(h.rule_id), [why])
                                       for h, why in exceeded)]
            return decision.model_copy(update={"effect": "deny", "rules": hits})
        if "require_approval" in actions:
            first = next(h for h, _ in exceeded if h.on_limit == "require_approval")
            lm = self.limit(first.rule_id)
            obligation = construct(ApprovalObligation, {
                "group": lm.group if lm else None, "channels": [], "remind_every_s": None, "timeout_s": None,
                "on_timeout": "deny", "escalate_to": None, "rule_id": first.rule_id, "chat": "hold"})
            hits = [*decision.rules, *(_hit(h.rule_id, "limit", "require_approval" if h.on_limit ==
                                            "require_approval" else None, self._span(h.rule_id),
                                            self._source(h.rule_id), [why]) for h, why in exceeded)]
            effect = decision.effect if decision.effect == "escalate" else "require_approval"
            return decision.model_copy(update={"effect": effect, "rules": hits,
                                               "obligations": [*decision.obligations, obligation]})
        free = [m for m in decision.routing.chain if self.models[m].self_hosted] or \
            [m for m, spec in self.models.items() if spec.self_hosted]
        why_free = "at the limit: only cost-0 models" + ("" if free else " (none declared): denied")
        hits = [*decision.rules, *(_hit(h.rule_id, "limit", None if free else "deny", self._span(h.rule_id),
                                        self._source(h.rule_id), [why, why_free]) for h, why in exceeded)]
        if not free:
            return decision.model_copy(update={"effect": "deny", "rules": hits})
        routing = decision.routing.model_copy(update={"chain": free, "prefer_self_hosted": True})
        again = self._limits(EvalContext(action, None, self), routing) if action is not None else decision.limits
        kept = [h for h in again if h.rule_id not in over]
        return decision.model_copy(update={"routing": routing, "rules": hits, "limits": kept})

    _SHADOW_LIMIT_EFFECT = {"deny": "deny", "require_approval": "require_approval", "prefer_self_hosted": None}

    def shadow_at_limit(self, decision: Decision, exceeded: list[tuple[LimitHit, str]]) -> Decision:
        """`decision` with the `shadow` limits in `exceeded` logged, not enforced: each is a
        `shadow` hit (kind `limit`) with its would-be effect (`deny`, `require_approval`; none for
        `prefer self_hosted`, a reroute) and the sentence saying how far it is used, and
        `shadow_effect` is the effect with them enforced. Effect, routing and limits are unchanged;
        a limit already logged on the decision is not added twice."""
        seen = {h.rule_id for h in decision.shadow}
        hits = list(decision.shadow)
        effect = decision.shadow_effect or decision.effect
        for h, why in exceeded:
            if h.rule_id in seen:
                continue
            seen.add(h.rule_id)
            would = self._SHADOW_LIMIT_EFFECT[h.on_limit]
            note = "shadow: not enforced" + (" (would keep only the cost-0 models)" if would is None else "")
            hits.append(_hit(h.rule_id, "limit", would, self._span(h.rule_id), self._source(h.rule_id), [why, note]))
            if would == "deny":
                effect = "deny"
            elif would == "require_approval" and effect == "allow":
                effect = "require_approval"
        if len(hits) == len(decision.shadow):
            return decision
        return decision.model_copy(update={"shadow": hits, "shadow_effect": effect})

    def find_limit(self, ref: str) -> CompiledLimit | None:
        """The limit `ref` names: its rule id (`file.policy:12`), its line (`12`), or text its source
        contains (`budget 50 GBP`); None when no limit or more than one matches."""
        exact = [lm for lm in self.limits if ref in (lm.rule_id, str(lm.span.line))]
        found = exact or [lm for lm in self.limits if ref and ref in lm.source]
        return found[0] if len(found) == 1 else None

    def evaluate_with_usage(self, action: Action, usage: dict[str, Any], signals: SignalProvider | None = None,
                            *, tokens: int | None = None) -> Decision:
        """`evaluate`, then what the decision becomes given how far its limits are used (a dry run:
        pure, no counters). `usage` maps a limit's rule id to its current value in the limit's
        terms: requests or tokens (a number), money (`"49.9 GBP"`). The request itself needs 1
        request, `tokens` (default: `action.prompt_tokens`, else 1) tokens, or their cost on the
        primary (at least one micro-unit); a limit it would carry past `at N%` is at the limit and
        `at_limit` applies (a reroute is checked once more). Raises ValueError on a value that is
        not in the limit's terms (a number for a budget, another currency)."""
        d = self.evaluate(action, signals)
        n = tokens if tokens is not None else (action.prompt_tokens or 1)
        for _ in range(2):
            exceeded = []
            for h in d.limits:
                lm = self.limit(h.rule_id)
                if lm is None or h.rule_id not in usage:
                    continue
                used = _units(lm, usage[h.rule_id])
                if lm.kind == "requests":
                    need = 1
                elif lm.kind == "tokens":
                    need = n
                else:
                    spec = self.models.get(h.model or "")
                    need = max(1, int(spec.cost_of(n) * MICRO)) if spec is not None and not spec.self_hosted else 0
                if need and used + need > lm.cap:
                    exceeded.append((h, f"{lm.kind} {usage[h.rule_id]} of {lm.limit_text} per {lm.window} "
                                        "(usage given)"))
            shadow = [e for e in exceeded if e[0].shadow]
            if shadow:
                d = self.shadow_at_limit(d, shadow)  # logged, not enforced
            exceeded = [e for e in exceeded if not e[0].shadow]
            if not exceeded:
                return d
            d = self.at_limit(d, exceeded[:1], action)
            if exceeded[0][0].on_limit != "prefer_self_hosted" or d.effect == "deny":
                return d  # refused or held: nothing more to count; a reroute is checked once more
        return d

    def _span(self, rule_id: str) -> SourceSpan | None:
        lm = self.limit(rule_id)
        return lm.span if lm else None

    def _source(self, rule_id: str) -> str:
        lm = self.limit(rule_id)
        return lm.source if lm else ""

    def _limits(self, ctx: EvalContext, routing: Routing | None) -> list[LimitHit]:
        primary = routing.chain[0] if routing is not None and routing.chain else None
        out: list[LimitHit] = []
        for lm in self.limits:
            if lm.models is not None and primary not in lm.models:
                continue
            if lm.cond is not None and lm.cond(ctx, []) is False:
                continue
            hit = self._limit_hits.get((lm.rule_id, primary))
            if hit is None:
                hit = self._limit_hits[(lm.rule_id, primary)] = construct(LimitHit, {
                    "rule_id": lm.rule_id, "kind": lm.kind, "limit": lm.limit_text, "window": lm.window,
                    "scope": list(lm.scope), "model": primary, "on_limit": lm.on_limit,
                    "at_percent": lm.cap_percent, "shadow": lm.shadow})
            out.append(hit)
        return out

    def route(self, action: Action) -> Routing:
        """The model chain for a model call by this caller (empty if none applies)."""
        routing, _, _, _ = self._route(EvalContext(action, None, self))
        return routing or Routing()

    def allowed_models(self, action: Action) -> list[str]:
        """The user-switchable allowlist for this caller (union of matching `allow model choice`)."""
        return self._allowed(EvalContext(action, None, self))[0]

    def always_denied(self, action: str) -> bool:
        """True when `action` is denied whatever its fields and signals: a deny rule without a
        condition names it, or no authorize, approval or escalation rule could let it through
        (the default deny)."""
        plan = self.plans.get(action, self.global_plan)
        return any(r.cond is None for r in plan.denies) or not (plan.holds or plan.authorizes)

    def never_allowed(self, action: Action) -> bool:
        """True when `action`, as far as it is known (the caller's attributes and the fields given,
        typically none of its arguments yet), is denied whatever else it may carry: it is
        `always_denied`, or a deny rule that reads no signal holds on it as given. A condition on a
        field the action lacks is undecidable here and does not count, so only denials that depend
        on the caller (tenant, role, channel...) or the given fields hide an action."""
        if self.always_denied(action.action):
            return True
        plan = self.plans.get(action.action, self.global_plan)
        ctx = EvalContext(action, None, self)
        return any(r.cond is not None and not r.signals and r.cond(ctx, []) is True for r in plan.denies)

    def signals_needed(self, action: Action | str) -> set[str]:
        """Signals a decision on this action may need, named as `policyengine.signals.precompute`
        expects them: "sentiment", "confidence", "mentions:<lexicon>". (Divergence is never
        listed: it comes from running the verification.) Already-supplied values need not be computed."""
        name = action if isinstance(action, str) else action.action
        cached = self._needed.get(name)
        if cached is None:
            plan = self.plans.get(name, self.global_plan)
            needed: set[str] = set()
            for r in (*plan.denies, *plan.holds, *plan.authorizes, *plan.shadows):
                needed |= r.signals
            if name in ROUTED:
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
        if a.action == EMBEDDINGS:  # the embeddings routes: few, scanned in source order
            for r in self.embedding_routes:
                because: list[str] = []
                if r.cond is not None and r.cond(ctx, because) is True:
                    return r, because
            if self.embedding_default is not None:
                return self.embedding_default, ["no earlier embeddings route matched: default route"]
            return None, []
        cands: list[int] = list(self.route_scan)
        for key_of, table in self.route_index.values():
            k = key_of(a)
            if k is not None:
                hit = table.get(k)
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
            why = ("no route matches this request and the policy has no `route default`" if a.action != EMBEDDINGS
                   else "no route leads to a model that serves embeddings (declare one with `serves [embeddings]` "
                        "and route to it)")
            refusal = _hit("route", "route", "deny", None, "", [why])
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
        routing = _routing(chain, r.sticky, r.sticky_return, r.prefer_self_hosted, r.rule_id, r.rate_limit_wait,
                           r.hedge_after, r.hedge_budget)
        hits.append(_hit(r.rule_id, "route", None, r.span, r.source, because))
        return routing, allowed, hits, refusal

    @staticmethod
    def _obligation(r: CompiledRule) -> ApprovalObligation:
        o = r.obligation or {}
        return construct(ApprovalObligation, {
            "group": o.get("group"), "channels": list(o.get("channels", ())), "remind_every_s": o.get("remind_every_s"),
            "timeout_s": o.get("timeout_s"), "on_timeout": o.get("on_timeout", "deny"),
            "escalate_to": o.get("escalate_to"), "rule_id": r.rule_id, "chat": o.get("chat", "hold"),
            "user_confirm": o.get("user_confirm", False),
        })

    def _decision(self, ctx: EvalContext, effect: str, hits: list[RuleHit], *, routing: Routing | None = None,
                  allowed: list[str] | None = None, obligations: list[ApprovalObligation] | None = None,
                  tags: list[str] | None = None, verification: Verification | None = None,
                  default_applied: bool = False, limits: list[LimitHit] | None = None) -> Decision:
        return construct(Decision, {
            "effect": effect, "action": ctx.action.action, "routing": routing or _routing([]), "rules": hits,
            "obligations": obligations or [], "tags": tags or [], "signals": ctx.signals,
            "verification": verification, "allowed_models": allowed or [], "default_applied": default_applied,
            "limits": limits or [], "shadow": [], "shadow_effect": None,  # every field: construct's fast path
            "policy_name": self.name, "policy_version": self.version, "policy_hash": self.hash, "notes": ctx.notes,
        })
