"""The compiled form of a policy set: what the compiler produces and the evaluator runs.

This module imports neither `policyengine.dsl` nor `policyengine.evaluator`; both import
it. It holds data and the contracts between the two sides, no compilation and no
evaluation:

* `PolicyIR`: one compiled policy set (models, lexicons, per-action rule plans, routes,
  the route index, model choices). `policyengine.evaluator.CompiledPolicy` is a
  `PolicyIR` with `evaluate`, `route`, `allowed_models` and `signals_needed`.
* `CompiledRule`, `CompiledRoute`, `CompiledChoice`, `ActionPlan`: its parts.
* `Cond` and `ConditionContext`: a compiled condition is `cond(ctx, because) -> True |
  False | None` over a context that offers `action`, `signal(name)` and
  `mention(lexicon, text, path)`; the evaluator's `EvalContext` is the implementation.
* The path vocabulary (`classify`, `BUILTIN`, `field_getter`, ...) and `MISSING`: what a
  condition's path reads from an `Action`, shared by the checker (which names exist),
  the compiler (which getter a condition uses) and replay.

The walk of one rule from `.policy` text to a `Decision` (five modules, plus the tree's
node classes in `dsl/ast`):

1. `policyengine.dsl.parser` - text -> `dsl.ast` nodes (grammar.lark, LALR).
2. `policyengine.dsl.checker` - nodes -> diagnostics; any error stops the walk.
3. `policyengine.dsl.compiler` - nodes -> a `PolicyIR` of closures and indexes.
4. `policyengine.ir` (this module) - the compiled form itself.
5. `policyengine.evaluator` - `CompiledPolicy.evaluate(action)` -> `Decision`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from policyengine.types import Action, ModelSpec, SourceSpan

MISSING: Any = object()
"""The value of a path the action does not carry (distinct from a supplied None)."""

CHAT = "chat"
"""The action name of a chat model call."""

EMBEDDINGS = "embeddings"
"""The action name of an embeddings call (routed to the models that `serve [embeddings]`)."""

ROUTED = frozenset({CHAT, EMBEDDINGS})
"""The actions that are model calls: routed, and allowed by their route unless a rule says otherwise."""

# ---------------------------------------------------------------------------- paths

# Attributes of the Action itself. Absent (None) means "not tagged": an equality
# or membership test on them is simply false, never fail-safe.
BUILTIN: dict[str, Callable[[Action], Any]] = {
    "action": lambda a: a.action,
    "tenant": lambda a: a.tenant,
    "tenant.id": lambda a: a.tenant,
    "tenant.tier": lambda a: a.tenant_tier,
    "tenant.channel": lambda a: a.channel,
    "channel": lambda a: a.channel,
    "user": lambda a: a.actor,
    "user.id": lambda a: a.actor,
    "user.role": lambda a: a.actor_role,
    "actor": lambda a: a.actor,
    "actor.id": lambda a: a.actor,
    "actor.role": lambda a: a.actor_role,
    "use_case": lambda a: a.use_case,
    "session": lambda a: a.session_id,
    "session.id": lambda a: a.session_id,
    "session_id": lambda a: a.session_id,
    "text": lambda a: a.text,
    "requested_model": lambda a: a.requested_model,
    "prompt_tokens": lambda a: a.prompt_tokens,
}
# The Action attribute each built-in reads (for fast attribute getters).
BUILTIN_ATTR: dict[str, str] = {
    "action": "action", "tenant": "tenant", "tenant.id": "tenant", "tenant.tier": "tenant_tier",
    "tenant.channel": "channel", "channel": "channel", "user": "actor", "user.id": "actor", "user.role": "actor_role",
    "actor": "actor", "actor.id": "actor", "actor.role": "actor_role", "use_case": "use_case",
    "session": "session_id", "session.id": "session_id", "session_id": "session_id", "text": "text",
    "requested_model": "requested_model", "prompt_tokens": "prompt_tokens",
}
assert set(BUILTIN_ATTR) == set(BUILTIN)
BUILTIN_TYPES: dict[str, str] = {k: "str" for k in BUILTIN}
BUILTIN_TYPES["prompt_tokens"] = "num"
NAMESPACES = ("tenant", "user", "actor", "session")

# Signals: numbers in [0, 1], supplied with the action or computed lazily.
SIGNALS = ("sentiment", "confidence", "divergence")

PathKind = Literal["builtin", "signal", "field"]


def classify(path: str) -> tuple[PathKind, str]:
    """-> (kind, key): builtin attribute, signal name, or a dotted path into `action.fields`."""
    if path in BUILTIN:
        return "builtin", path
    if path in SIGNALS:
        return "signal", path
    if path.startswith("signals."):
        return "signal", path[len("signals."):]
    if path.startswith("fields."):
        return "field", path[len("fields."):]
    return "field", path


def unknown_builtin(path: str) -> bool:
    """`tenant.tiers`: a misspelt attribute of a built-in namespace (not an action field)."""
    head = path.split(".", 1)[0]
    return head in NAMESPACES and "." in path and path not in BUILTIN


def field_getter(key: str) -> Callable[[Action], Any]:
    """A reader of the dotted path `key` in `action.fields`: the value, or MISSING when
    any step is absent or not a mapping."""
    parts = key.split(".")
    if len(parts) == 1:
        k = parts[0]
        return lambda a: a.fields.get(k, MISSING)

    def get(a: Action) -> Any:
        cur: Any = a.fields
        for p in parts:
            if not isinstance(cur, dict) or p not in cur:
                return MISSING
            cur = cur[p]
        return cur

    return get


# ---------------------------------------------------------------------------- conditions


class ConditionContext(Protocol):
    """What a compiled condition may ask of the decision it runs in.

    One context serves one decision and is never shared. `signal` returns MISSING
    when the signal is neither supplied nor computable; `mention` returns a short
    description of the match, or None when the text does not mention the lexicon.
    """

    @property
    def action(self) -> Action:
        """The action being decided."""
        ...

    def signal(self, name: str) -> Any:
        """The signal's value (supplied, else computed once per decision), or MISSING."""
        ...

    def mention(self, lexicon: str, text: str | None, path: str, mode: str = "words") -> str | None:
        """How `text` (read from `path`) mentions `lexicon` in `mode` (`MENTION_MODES`), or None
        when it does not."""
        ...


Cond = Callable[[ConditionContext, list[str]], "bool | None"]
"""A compiled condition: True, False, or None (undecidable). It appends the comparisons
that made it true or undecidable to the list it is given, and nothing when it is false."""

RouteKey = Callable[[Action], "str | None"]
"""The route index's reader of one path: the string the index is keyed by (the value as
the route conditions compare it), or None when the action does not carry the path."""


# ---------------------------------------------------------------------------- compiled rules


@dataclass(slots=True)
class CompiledRule:
    """One standing order (deny, require_approval, escalate, authorize or verify), compiled.

    `order` is its position in the policy set's source (unique, increasing); `cond` None
    means "always". `restrictive` rules (all but authorize) fire on an undecidable
    condition. Verify rules also carry the models to compare, the escalation condition
    on `divergence` (`divergence_cond`, its `threshold` when it is `divergence > N`), the
    tag for a verification within threshold, and the judge model (and its timeout) if any.
    """

    kind: str  # deny | require_approval | escalate | authorize | verify
    rule_id: str
    span: SourceSpan
    source: str
    cond: Cond | None
    order: int
    obligation: dict[str, Any] | None = None  # ApprovalObligation fields
    signals: frozenset[str] = frozenset()  # signals the condition may read
    restrictive: bool = True
    # verify only
    models: tuple[str, ...] = ()
    threshold: float | None = None
    divergence_cond: Cond | None = None
    tag: str | None = None
    judge: str | None = None  # `judge M`: the model whose verdict decides when it gives one
    judge_timeout: float | None = None  # `judge M timeout D`, seconds (None: the default)
    judge_fallback: tuple[str, ...] = ()  # `judge M fallback [N, ...]`: tried after the judge, in order
    shadow: bool = False  # a `shadow` rule: evaluated and reported, never enforced


@dataclass(slots=True)
class CompiledRoute:
    """One `route` statement: the model chain (primary first, then its fallbacks, no
    duplicates) for a model call its condition matches; `cond` None only for the default."""

    rule_id: str
    span: SourceSpan
    source: str
    cond: Cond | None
    chain: tuple[str, ...]
    sticky: bool
    sticky_return: bool
    prefer_self_hosted: bool
    rate_limit_wait: float | None = None  # `on rate_limit wait up to <d>`, seconds
    hedge_after: float | None = None  # seconds without a first token before a hedge (None: no hedging)
    hedge_budget: float = 0.1  # at most this fraction of the route's requests are hedged


@dataclass(slots=True)
class CompiledChoice:
    """One `allow model choice`: models a caller matching `cond` (None: every caller) may request."""

    rule_id: str
    span: SourceSpan
    source: str
    cond: Cond | None
    models: tuple[str, ...]


@dataclass(slots=True)
class ActionPlan:
    """The rules that can apply to one action name, each tuple in source order."""

    denies: tuple[CompiledRule, ...] = ()
    holds: tuple[CompiledRule, ...] = ()  # require_approval, escalate, verify
    authorizes: tuple[CompiledRule, ...] = ()
    named: bool = False  # some rule names this action explicitly
    # `shadow` rules (any kind but verify), in source order: evaluated after the decision, never
    # enforced; they do not make an action `named`
    shadows: tuple[CompiledRule, ...] = ()


# The windows a limit may count over, in seconds (`month` is the calendar month, UTC).
WINDOWS: dict[str, int] = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400, "month": 0}
# What a limit may be counted per: the Action / Principal attribute each names.
LIMIT_SCOPES: tuple[str, ...] = ("tenant", "user", "key", "model", "use_case")


@dataclass(slots=True)
class CompiledLimit:
    """One `limit` / `budget` statement, compiled.

    `amount` is an integer in the counter's unit: requests, tokens, or micro-units of
    `currency` (1 GBP = 1_000_000) for a budget. `window_s` is the fixed window's length
    (0: the calendar month, UTC). `scope` the `per` names in order; `models` the `on
    model` set (None: any model). `cond` None: always. `cap_percent` is where `on_limit`
    applies (100: at the limit); `notify` the thresholds (percent, channels) that send a
    notice once per window; `fail_open` what a request does when the counters cannot be
    reached (budgets fail closed by default, rate limits open).
    """

    rule_id: str
    span: SourceSpan
    source: str
    kind: Literal["requests", "tokens", "spend"]
    amount: int
    limit_text: str  # "60", "50 GBP"
    currency: str | None
    window: str  # as written
    window_s: int
    scope: tuple[str, ...]
    models: frozenset[str] | None
    cond: Cond | None
    on_limit: Literal["deny", "prefer_self_hosted", "require_approval"] = "deny"
    cap_percent: float = 100.0
    group: str | None = None  # require approval group
    notify: tuple[tuple[float, tuple[Any, ...]], ...] = ()  # (percent, Channel...)
    fail_open: bool = False
    signals: frozenset[str] = frozenset()
    cap: int = 0  # the counter value at which `on_limit` applies (amount x cap_percent; set by the compiler)
    shadow: bool = False  # `shadow limit|budget`: counted, and at the limit logged, never enforced
    thresholds: tuple[int, ...] = ()  # the counter values of the `notify` thresholds, in order


MICRO = 1_000_000
"""Money counters count micro-units of the budget's currency (integers: no rounding drift)."""


@dataclass
class PolicyIR:
    """One compiled policy set, as the compiler leaves it; read-only afterwards.

    `plans` maps every action some rule names (and always `chat`) to its ActionPlan;
    `global_plan` serves every other action (only the rules without an action list).
    `routes` are the conditional routes in source order; `route_index` maps a path to
    its reader and {value: indexes into `routes`} for routes that cannot match unless
    that path has one of those values, `route_scan` lists the indexes of the other
    routes. `lexicon_res` holds one compiled matcher per lexicon. `actions` is every
    action name some rule names; `route_signals` the signals routes and model choices read.
    """

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
    route_index: dict[str, tuple[RouteKey, dict[str, tuple[int, ...]]]] = field(default_factory=dict)
    route_scan: tuple[int, ...] = ()
    # embeddings requests: the routes whose primary serves embeddings, in source order (few: scanned)
    embedding_routes: list[CompiledRoute] = field(default_factory=list)
    embedding_default: CompiledRoute | None = None
    choices: list[CompiledChoice] = field(default_factory=list)
    lexicon_res: dict[str, re.Pattern[str]] = field(default_factory=dict)
    actions: frozenset[str] = frozenset()
    route_signals: frozenset[str] = frozenset()
    limits: list[CompiledLimit] = field(default_factory=list)


# How `text mentions LEXICON [by MODE]` decides (docs/language.md): `words` matches the
# lexicon's phrases; `intent` asks the lexicon topic's intent model whether the text means
# it; `both` (the default when the lexicon has an intent model) fires on intent and shows
# the matched words as evidence. A lexicon without an intent model defaults to `words`.
MENTION_MODES: tuple[str, ...] = ("both", "words", "intent")
# Lexicon names with a shipped intent model (policyengine.signals.intent.INTENT_TOPICS;
# tests/signals/test_mention_modes.py checks the two agree).
INTENT_LEXICONS: frozenset[str] = frozenset({"litigation"})


def mention_mode(lexicon: str, mode: str | None) -> str:
    """The effective mode of `mentions LEXICON [by MODE]`: the one written, else `both` for a
    lexicon with an intent model and `words` otherwise."""
    if mode is not None:
        return mode
    return "both" if lexicon in INTENT_LEXICONS else "words"


def mention_signal(lexicon: str, mode: str) -> str:
    """The signal name a mention condition reads: `mentions:LEX` for the default (`both`, or
    `words` on a lexicon without an intent model), `mentions:LEX:words` / `mentions:LEX:intent`
    for an explicit mode that differs from the default."""
    return f"mentions:{lexicon}" if mode == mention_mode(lexicon, None) else f"mentions:{lexicon}:{mode}"


__all__ = [
    "BUILTIN",
    "BUILTIN_ATTR",
    "BUILTIN_TYPES",
    "CHAT",
    "EMBEDDINGS",
    "INTENT_LEXICONS",
    "LIMIT_SCOPES",
    "MENTION_MODES",
    "MICRO",
    "MISSING",
    "NAMESPACES",
    "ROUTED",
    "SIGNALS",
    "WINDOWS",
    "ActionPlan",
    "CompiledChoice",
    "CompiledLimit",
    "CompiledRoute",
    "CompiledRule",
    "Cond",
    "ConditionContext",
    "PathKind",
    "PolicyIR",
    "RouteKey",
    "classify",
    "field_getter",
    "mention_mode",
    "mention_signal",
    "unknown_builtin",
]
