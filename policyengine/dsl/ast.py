"""The syntax tree of a policy file. Every node knows where it came from (`span`).

Spans are excluded from equality so that two trees compare equal when they say
the same thing, wherever it was written (used by the formatter round-trip).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal


@dataclass(frozen=True)
class Span:
    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


NOWHERE = Span("<none>", 1, 1, 1, 1)


@dataclass(frozen=True)
class Name:
    value: str
    span: Span = field(default=NOWHERE, compare=False, repr=False)

    def __str__(self) -> str:
        return self.value


# ----------------------------------------------------------------- values

ValueKind = Literal["str", "num", "money", "duration", "bool"]


@dataclass(frozen=True)
class Value:
    kind: ValueKind
    value: object  # str | Decimal | (Decimal, currency) | seconds (Decimal) | bool
    raw: str  # canonical source text
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class Str:
    """A string literal where a string or an env reference may stand."""

    value: str
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class Env:
    name: str
    span: Span = field(default=NOWHERE, compare=False, repr=False)


# ----------------------------------------------------------------- expressions


@dataclass(frozen=True)
class Cmp:
    path: Name
    op: str
    value: Value
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class In:
    path: Name
    values: tuple[Value, ...]
    negated: bool = False
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class Mentions:
    path: Name
    lexicon: Name
    span: Span = field(default=NOWHERE, compare=False, repr=False)
    mode: Name | None = None  # `by words` / `by intent` / `by both`; None = the lexicon's default


@dataclass(frozen=True)
class Truthy:
    path: Name
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class And:
    items: tuple[Expr, ...]
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class Or:
    items: tuple[Expr, ...]
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class Not:
    item: Expr
    span: Span = field(default=NOWHERE, compare=False, repr=False)


Expr = Cmp | In | Mentions | Truthy | And | Or | Not


# ----------------------------------------------------------------- declarations


@dataclass(frozen=True)
class PolicyDecl:
    name: str
    version: int | str | None
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class TimeoutPart:
    kind: str  # connect | first_token | idle | total
    seconds: Decimal
    raw: str
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class Prop:
    """One model property: key is provider|api|base_url|model_id|keys|cost|context|timeout|supports|serves|region
    |project|header|deployment (a DeploymentDecl)|balance (a Name)|health (a HealthDecl); inside a deployment also
    weight and max_concurrency (a num Value)."""

    key: str
    value: object
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class DeploymentDecl:
    """`deployment NAME { ... }` inside a model: props base_url | keys | weight | max_concurrency | region
    (weight and max_concurrency hold a num `Value`)."""

    name: Name
    props: tuple[Prop, ...]
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class HealthDecl:
    """`health ["PATH"] [every DURATION]` inside a model: its active health check."""

    path: Str | None
    every: Value | None  # a duration Value
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class Hedge:
    """`hedge after DURATION [budget N%]` on a route; `budget` is a num Value holding the fraction
    (0.1 for `10%` or `0.1`), its raw text the canonical percentage."""

    after: Value  # a duration Value
    budget: Value | None
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class ModelDecl:
    name: Name
    props: tuple[Prop, ...]
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class Route:
    cond: Expr | None  # None: `route default`
    primary: Name
    fallback: tuple[Name, ...] | None  # None: inherit the default route's fallbacks
    sticky: bool = False
    sticky_return: bool = False
    prefer_self_hosted: bool = False
    span: Span = field(default=NOWHERE, compare=False, repr=False)
    # `on rate_limit wait up to <d>`: seconds (and the text as written), None when absent
    rate_limit_wait: Decimal | None = None
    rate_limit_wait_raw: str | None = None
    hedge: Hedge | None = None


@dataclass(frozen=True)
class AllowChoice:
    models: tuple[Name, ...]
    cond: Expr | None
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class Channel:
    kind: str
    target: str
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class HoldItem:
    """reviewers (group) | notify (channels) | remind (seconds) | timeout (seconds, outcome, group)
    | chat (mode: what a hold means for a chat request: hold, review or block)
    | confirm (`confirm by user`: a client that can ask its user, e.g. an MCP client through
    elicitation, may release the hold on the user's own confirmation)."""

    kind: Literal["reviewers", "notify", "remind", "timeout", "chat", "confirm"]
    group: str | None = None
    channels: tuple[Channel, ...] = ()
    seconds: Decimal | None = None
    raw: str = ""  # duration as written, canonical
    outcome: Literal["deny", "approve", "escalate"] | None = None
    mode: Literal["hold", "review", "block"] | None = None
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class Authorize:
    actions: tuple[Name, ...]
    cond: Expr | None
    span: Span = field(default=NOWHERE, compare=False, repr=False)
    shadow: bool = False  # `shadow ...`: evaluated and logged, never enforced


@dataclass(frozen=True)
class RequireApproval:
    actions: tuple[Name, ...]
    cond: Expr | None
    hold: tuple[HoldItem, ...] | None
    span: Span = field(default=NOWHERE, compare=False, repr=False)
    shadow: bool = False  # `shadow ...`: evaluated and logged, never enforced


@dataclass(frozen=True)
class Deny:
    actions: tuple[Name, ...]
    cond: Expr | None
    span: Span = field(default=NOWHERE, compare=False, repr=False)
    shadow: bool = False  # `shadow ...`: evaluated and logged, never enforced


@dataclass(frozen=True)
class Lexicon:
    name: Name
    phrases: tuple[Str, ...]
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class Escalate:
    actions: tuple[Name, ...] | None  # None: every action
    cond: Expr
    hold: tuple[HoldItem, ...] | None
    span: Span = field(default=NOWHERE, compare=False, repr=False)
    shadow: bool = False  # `shadow ...`: evaluated and logged, never enforced


@dataclass(frozen=True)
class Judge:
    """`judge M [fallback [N, ...]] [timeout D]` of a verify rule: the model that reads both
    answers, the models tried after it when it fails, and how long verification waits for a
    verdict in all (`seconds` None: the default)."""

    model: Name
    seconds: Decimal | None = None
    raw: str = ""  # the timeout as written, canonical
    span: Span = field(default=NOWHERE, compare=False, repr=False)
    timeout_span: Span = field(default=NOWHERE, compare=False, repr=False)  # of the duration
    fallback: tuple[Name, ...] = ()


@dataclass(frozen=True)
class Verify:
    actions: tuple[Name, ...] | None
    cond: Expr
    models: tuple[Name, ...]
    escalate: Expr  # normally `divergence > X`
    tag: str | None
    hold: tuple[HoldItem, ...]
    span: Span = field(default=NOWHERE, compare=False, repr=False)
    shadow: bool = False  # `shadow verify ...`: evaluated and logged, never asks for verification
    judge: Judge | None = None


@dataclass(frozen=True)
class LimitItem:
    """One item of a limit's block: `at P% notify ...` (kind notify), `at P% deny | prefer
    self_hosted | require approval [group "g"]` (kind action), `on outage fail open|closed` (kind outage)."""

    kind: Literal["notify", "action", "outage"]
    percent: Decimal | None = None
    raw: str = ""  # the percentage as written, canonical (`80%`)
    channels: tuple[Channel, ...] = ()
    action: Literal["deny", "prefer_self_hosted", "require_approval"] | None = None
    group: str | None = None  # require approval group "..."
    fail_open: bool | None = None
    span: Span = field(default=NOWHERE, compare=False, repr=False)


@dataclass(frozen=True)
class Limit:
    """`limit requests|tokens N per WINDOW ...` (kind requests / tokens, amount a num Value) or
    `budget MONEY per WINDOW ...` (kind spend, amount a money Value). `window` is the window as
    written (`minute`, `day`, `2s`); `scope` the `per` names (empty: one counter for the service);
    `models` the `on model` list (None: every model)."""

    kind: Literal["requests", "tokens", "spend"]
    amount: Value
    window: Name
    scope: tuple[Name, ...]
    models: tuple[Name, ...] | None
    cond: Expr | None
    items: tuple[LimitItem, ...] | None
    span: Span = field(default=NOWHERE, compare=False, repr=False)
    shadow: bool = False  # `shadow limit|budget ...`: counted and logged at its limit, never enforced


Item = (PolicyDecl | ModelDecl | Route | AllowChoice | Authorize | RequireApproval | Deny | Lexicon | Escalate | Verify
        | Limit)


@dataclass(frozen=True)
class Comment:
    text: str
    line: int
    col: int
    own_line: bool  # nothing but whitespace before it on its line


@dataclass
class PolicyFile:
    path: str
    text: str
    items: list[Item]
    comments: list[Comment] = field(default_factory=list, compare=False)
