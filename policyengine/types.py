"""The public data types that cross layer boundaries.

Everything the evaluator takes in (`Action`) and gives out (`Decision`), and the
model declarations the dispatcher executes (`ModelSpec`), lives here so that
`dsl/`, `evaluator`, `dispatch`, `store/` and `api/` share one vocabulary and
none of them imports another just for a type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

# ---------------------------------------------------------------------------
# Literals shared by the language and the runtime
# ---------------------------------------------------------------------------


_MONEY_RE = re.compile(
    r"\s*([0-9][0-9_,]*(?:\.[0-9]+)?)\s*([A-Za-z]{3})\s*|\s*([A-Za-z]{3})\s*([0-9][0-9_,]*(?:\.[0-9]+)?)\s*"
)


def parse_money(value: Any) -> tuple[Decimal, str] | None:
    """The one reader of money values: `"150 GBP"`, `"GBP 150"`, `{amount, currency}` or a
    Money -> (amount, upper-case currency), or None if it is not money. Cheap: the
    evaluator calls it on the hot path."""
    if isinstance(value, dict):
        try:
            amount, currency = Decimal(str(value["amount"])), str(value["currency"]).upper()
        except (KeyError, InvalidOperation):
            return None
        if not amount.is_finite():  # NaN, sNaN, Infinity: not an amount (and NaN cannot be compared)
            return None
        return amount, currency
    if isinstance(value, str):
        m = _MONEY_RE.fullmatch(value)
        if not m:
            return None
        num, cur = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
        return Decimal(num.replace(",", "").replace("_", "")), cur.upper()
    amount = getattr(value, "amount", None)
    currency = getattr(value, "currency", None)
    if isinstance(amount, Decimal) and isinstance(currency, str):
        return amount, currency
    return None


_NON_FINITE = r"[+-]?(?:s?nan|inf(?:inity)?)"
_NON_FINITE_MONEY_RE = re.compile(rf"\s*{_NON_FINITE}\s*[A-Za-z]{{3}}\s*|\s*[A-Za-z]{{3}}\s*{_NON_FINITE}\s*",
                                  re.IGNORECASE)


def non_finite_money(value: Any) -> bool:
    """Whether `value` is shaped like money but its amount is not a finite number (`"NaN GBP"`,
    `{"amount": "sNaN", "currency": "GBP"}`, `"GBP Infinity"`): a value no comparison can decide."""
    if isinstance(value, str):
        return len(value) < 40 and _NON_FINITE_MONEY_RE.fullmatch(value) is not None
    if isinstance(value, dict) and "amount" in value and "currency" in value:
        amount = value["amount"]
        if isinstance(amount, bool) or not isinstance(amount, str | int | float):
            return False
        try:
            return not Decimal(str(amount)).is_finite()
        except InvalidOperation:
            return False
    return False


def _check_money_values(fields: dict[str, Any], limit: int = 10_000) -> None:
    """Raise ValueError naming the first value in `fields` (at any depth) that is money with a
    non-finite amount. Looks at no more than `limit` values."""
    stack: list[tuple[str, Any]] = [("", fields)]
    seen = 0
    while stack and seen < limit:
        path, obj = stack.pop()
        items = obj.items() if isinstance(obj, dict) else enumerate(obj)
        for k, v in items:
            seen += 1
            where = f"{path}.{k}" if path else str(k)
            if non_finite_money(v):
                raise ValueError(f"fields.{where}: a money amount must be a finite number, got {v!r}")
            if isinstance(v, dict | list):
                stack.append((where, v))


class Money(BaseModel):
    """An amount in one currency (ISO 4217 code, upper case); the amount is a finite number."""

    model_config = ConfigDict(frozen=True)

    amount: Decimal = Field(allow_inf_nan=False)
    currency: str

    @field_validator("currency")
    @classmethod
    def _upper(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z]{3}", v):
            raise ValueError(f"currency must be a 3-letter ISO 4217 code, got {v!r}")
        return v.upper()

    @classmethod
    def parse(cls, value: Any) -> Money:
        """Accept `"150 GBP"`, `"GBP 150"`, `{"amount": 150, "currency": "GBP"}` or a Money."""
        if isinstance(value, Money):
            return value
        parsed = parse_money(value)
        if parsed is None:
            raise ValueError(f"not a money value: {value!r} (expected e.g. \"150 GBP\" or {{amount, currency}})")
        return cls(amount=parsed[0], currency=parsed[1])

    def __str__(self) -> str:
        return f"{self.amount} {self.currency}"


# ---------------------------------------------------------------------------
# Models (inference endpoints) as declared in a policy
# ---------------------------------------------------------------------------


class Provider(StrEnum):
    """Provider family. All OpenAI-compatible servers share one adapter."""

    openai = "openai"  # any OpenAI-compatible /v1/chat/completions server
    vllm = "vllm"
    ollama = "ollama"
    tgi = "tgi"
    lmstudio = "lmstudio"
    bedrock = "bedrock"
    vertex = "vertex"
    anthropic = "anthropic"  # any Anthropic Messages API server (/v1/messages)

    @property
    def openai_compatible(self) -> bool:
        """True for every family served by the OpenAI-compatible adapter (all but Bedrock, Vertex and Anthropic)."""
        return self not in (Provider.bedrock, Provider.vertex, Provider.anthropic)


class EnvRef(BaseModel):
    """A secret or setting read from the environment at call time. Never a literal."""

    model_config = ConfigDict(frozen=True)

    name: str

    def resolve(self, environ: dict[str, str] | None = None) -> str | None:
        """The variable's current value in `environ` (default: `os.environ`), or None when unset."""
        import os

        return (environ if environ is not None else os.environ).get(self.name)

    def __str__(self) -> str:
        return f'env("{self.name}")'


class Timeouts(BaseModel):
    """Per-model time budgets in seconds (None = dispatcher default)."""

    model_config = ConfigDict(frozen=True)

    connect: float | None = None
    first_token: float | None = None
    idle: float | None = None  # max gap between stream chunks
    total: float | None = None


class Capabilities(BaseModel):
    """What a model's endpoint supports: streaming, tool calls, continuing a trailing assistant message."""

    model_config = ConfigDict(frozen=True)

    streaming: bool = True
    tools: bool = True
    prefill: bool = False  # accepts a trailing assistant message to continue from


ServedKind = Literal["chat", "embeddings"]
"""What a model's endpoint answers (`serves [chat, embeddings]` in its model block; chat by default)."""

SERVED_KINDS: tuple[str, ...] = ("chat", "embeddings")

BalanceStrategy = Literal["weighted", "round_robin", "least_outstanding", "latency"]
"""How the dispatcher spreads one model's requests over its deployments (see `policyengine.dispatch.balance`)."""


class Deployment(BaseModel):
    """One place a model is served from: its endpoint (or region), keys, share of traffic and concurrency cap.

    A deployment's unset `base_url`, `keys` or `region` fall back to the model's own values;
    `weight` > 0; `max_concurrency` None means unbounded (per dispatcher replica).
    """

    model_config = ConfigDict(frozen=True)

    name: str
    base_url: str | EnvRef | None = None
    keys: tuple[EnvRef, ...] = ()
    region: str | None = None
    weight: float = Field(1.0, gt=0)
    max_concurrency: int | None = Field(None, ge=1)
    line: int | None = None


ApiKind = Literal["openai", "native"]
"""How a model is called: its provider's OpenAI-compatible API, or its native one (Ollama only)."""
#: providers that have a native API the dispatcher speaks
NATIVE_API_PROVIDERS = frozenset({"ollama"})


class HealthCheck(BaseModel):
    """A model's active health check (`health "PATH" every D` in a policy).

    `path` None: the provider's default (`<base_url>/models` for OpenAI-compatible servers; a TCP
    connect to the endpoint for Bedrock and Vertex). A path starting with `/` is requested from the
    server root (`/health` on `http://h:8000/v1` is `http://h:8000/health`); any other is appended to
    the base_url. `interval` None: the dispatcher's `health_interval` (10 s when that is unset).
    """

    model_config = ConfigDict(frozen=True)

    path: str | None = None
    interval: float | None = Field(None, gt=0)


class ModelSpec(BaseModel):
    """One model the policy may route to: everything the dispatcher needs to call it.

    `deployments` empty means one implicit deployment: the model's own base_url, keys and region.
    `health` set: its deployments are probed even when the dispatcher's health checks are off.
    """

    model_config = ConfigDict(frozen=True)

    name: str  # the policy's name for it, e.g. "qwen-72b"
    provider: Provider
    #: the wire protocol: "openai" (the OpenAI-compatible API every family but Bedrock/Vertex
    #: serves) or "native" (the provider's own API: Ollama's /api/chat, with num_ctx = `context`)
    api: ApiKind = "openai"
    base_url: str | EnvRef | None = None  # OpenAI-compatible endpoint (.../v1) or Vertex endpoint
    model_id: str | None = None  # upstream model id; defaults to `name`
    keys: tuple[EnvRef, ...] = ()  # rotated on auth failure, in order
    cost_per_1k: Decimal = Decimal(0)  # 0 = self-hosted
    cost_currency: str | None = None  # `cost 0.5 GBP per 1k tokens`; None: the currency of the budget counting it
    context: int | None = None  # context window in tokens
    timeouts: Timeouts = Timeouts()
    capabilities: Capabilities = Capabilities()
    region: str | None = None  # bedrock / vertex
    project: str | EnvRef | None = None  # vertex
    headers: dict[str, str | EnvRef] = Field(default_factory=dict)
    deployments: tuple[Deployment, ...] = ()
    balance: BalanceStrategy = "weighted"
    serves: tuple[ServedKind, ...] = ("chat",)  # what the endpoint answers: chat completions, embeddings
    health: HealthCheck | None = None
    file: str | None = None
    line: int | None = None

    @field_validator("api")
    @classmethod
    def _api_for_provider(cls, v: str, info: ValidationInfo) -> str:
        prov = info.data.get("provider")
        if v == "native" and prov is not None and str(prov) not in NATIVE_API_PROVIDERS:
            raise ValueError(f"api native is only for provider {', '.join(sorted(NATIVE_API_PROVIDERS))}, not {prov}")
        return v

    @property
    def upstream_model(self) -> str:
        """The model id sent upstream: `model_id` when declared, otherwise the policy's `name`."""
        return self.model_id or self.name

    @property
    def self_hosted(self) -> bool:
        """True when the model costs nothing per call (`cost_per_1k == 0`), which is how self-hosted is declared."""
        return self.cost_per_1k == 0

    def cost_of(self, tokens: int) -> Decimal:
        """What `tokens` tokens (prompt and completion alike) cost on this model, in its currency."""
        return self.cost_per_1k * tokens / 1000


# ---------------------------------------------------------------------------
# Action in, Decision out
# ---------------------------------------------------------------------------


# Longest value of the Action fields that are also stored in a sized column (decisions.tenant /
# actor / session_id / action, approvals.requester_actor / action_name: String(200)).
STORED_ID_MAX = 200
# The Action's string fields: NUL is refused in every one of them (each is stored, and PostgreSQL
# text cannot hold NUL).
_ACTION_STR_FIELDS = ("action", "tenant", "tenant_tier", "channel", "actor", "actor_role", "use_case",
                      "session_id", "text", "requested_model")


class Action(BaseModel):
    """What an application asks the policy about: an agent action or a model call.

    `fields` holds the action's own data (money as "150 GBP" or {amount, currency}).
    `signals` holds pre-computed signal values; they win over computed ones.

    Guarantees that a validated Action can be stored: `action`, `tenant`, `actor` and
    `session_id` are at most `STORED_ID_MAX` characters (the sizes of the columns that hold
    them), and no string field contains a NUL character (a ValidationError names the field).
    """

    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=STORED_ID_MAX)
    tenant: str | None = Field(default=None, max_length=STORED_ID_MAX)
    tenant_tier: str | None = None
    channel: str | None = None
    actor: str | None = Field(default=None, max_length=STORED_ID_MAX)
    actor_role: str | None = None
    use_case: str | None = None
    session_id: str | None = Field(default=None, max_length=STORED_ID_MAX)
    text: str | None = None
    requested_model: str | None = None  # user-switchable model choice
    prompt_tokens: int | None = Field(default=None, ge=0)  # for context-window-aware routing
    fields: dict[str, Any] = Field(default_factory=dict)
    signals: dict[str, Any] = Field(default_factory=dict)

    @field_validator(*_ACTION_STR_FIELDS)
    @classmethod
    def _no_nul(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and "\x00" in v:
            raise ValueError(f"{info.field_name} must not contain a NUL character (\\x00)")
        return v

    @field_validator("fields")
    @classmethod
    def _finite_money(cls, v: dict[str, Any]) -> dict[str, Any]:
        if v:
            _check_money_values(v)
        return v


Effect = Literal["allow", "deny", "require_approval", "escalate"]


class SourceSpan(BaseModel):
    """Where a rule is in policy source: 1-based line and column, optionally its end; `str()` is `file:line`."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int
    col: int = 1
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


class RuleHit(BaseModel):
    """One rule that fired, where it is, and the comparisons that made it fire."""

    rule_id: str  # stable id, e.g. "support-desk.policy:17"
    kind: str  # authorize | require_approval | deny | escalate | route | verify | allow_choice | default
    effect: Effect | None = None
    span: SourceSpan | None = None
    source: str = ""  # the rule's source text (one line)
    because: list[str] = Field(default_factory=list)  # e.g. ["sentiment 0.21 < 0.3"]


class Channel(BaseModel):
    """One place an approval notice is sent: a channel kind and its target (channel, address or URL)."""

    kind: Literal["slack", "teams", "email", "webhook"]
    target: str


class ApprovalObligation(BaseModel):
    """Who must act on a held decision, how they are told, and what happens if they don't."""

    group: str | None = None
    channels: list[Channel] = Field(default_factory=list)
    remind_every_s: float | None = None
    timeout_s: float | None = None
    on_timeout: Literal["deny", "approve", "escalate"] = "deny"
    escalate_to: str | None = None  # group, when on_timeout == "escalate"
    rule_id: str | None = None
    # what the hold means for a chat request: hold it before the model is called, answer then
    # review (the answer goes out tagged, a review case opens), or block (refuse)
    chat: Literal["hold", "review", "block"] = "hold"
    # `confirm by user`: a client that can ask its own user (MCP elicitation) may release the
    # hold on the user's confirmation instead of a reviewer's; other paths ignore it
    user_confirm: bool = False


# How long a verification waits for its judge model's verdict, in seconds (the answer waits
# with it): the default, and the most a policy may write (`judge M timeout D`, checker E255).
DEFAULT_JUDGE_TIMEOUT_S = 20.0
MAX_JUDGE_TIMEOUT_S = 300.0


class Verification(BaseModel):
    """Dual-model verification the caller (service) must run before the answer ships."""

    models: list[str]
    threshold: float  # escalate when divergence > threshold
    tag: str | None = None  # tag to add when aligned
    rule_id: str | None = None
    # `judge M [fallback [N, ...]] [timeout D]`: a third model whose verdict decides when it gives
    # one (the embedded comparator decides when it fails); the timeout in seconds (None: 20 s)
    judge: str | None = None
    judge_timeout: float | None = None
    judge_fallback: list[str] = Field(default_factory=list)  # tried after the judge, in order


class Routing(BaseModel):
    """The models a decision may call, in order, and how the dispatcher walks them (stickiness, self-hosted first)."""

    chain: list[str] = Field(default_factory=list)  # primary first, then fallbacks
    sticky: bool = False
    sticky_return: bool = False  # move back to the original model once it recovers
    prefer_self_hosted: bool = False
    hedge_after: float | None = None  # seconds without a first token before a hedge starts (None: no hedging)
    hedge_budget: float = 0.1  # hedges at most this fraction of requests (0 < budget <= 1)
    # `on rate_limit wait up to <d>`: the longest Retry-After (or rate-limit backoff) waited out on
    # the same model while a healthy fallback is available. None: a healthy fallback is called at
    # once. With no fallback available the dispatcher waits up to `max_retry_wait` either way.
    rate_limit_wait: float | None = None
    rule_id: str | None = None


LimitKind = Literal["requests", "tokens", "spend"]
LimitAction = Literal["deny", "prefer_self_hosted", "require_approval"]


class LimitHit(BaseModel):
    """A `limit` or `budget` that applies to a decision: what it counts, how much per window,
    over which scope, and what happens at the limit. The evaluator lists the limits that apply
    (pure); the gateway counts them (`policyengine.gateway.limits`) and, at the limit, the
    policy's `at_limit` decides what the request becomes."""

    rule_id: str
    kind: LimitKind
    limit: str  # "60", "50 GBP"
    window: str  # as written: "minute", "day", "2s"
    scope: list[str] = Field(default_factory=list)  # the `per` names: tenant, user, key, model, use_case
    model: str | None = None  # the model the scope's `model` (and `on model`) counted: the chain's primary
    on_limit: LimitAction = "deny"
    at_percent: float = 100.0  # the share of the limit at which on_limit applies
    shadow: bool = False  # a `shadow` limit: counted; at the limit its would-be effect is logged, not enforced


class Decision(BaseModel):
    """The policy's answer for one Action: the effect, the rules that produced it and what the caller must do.

    `rules` lists every rule that applied (a default deny is `default_applied`); `obligations`
    are the approvals a held effect needs; `routing` and `verification` say how a model call
    must be dispatched; `policy_name`, `policy_version` and `policy_hash` identify the policy
    that decided.
    """

    effect: Effect
    action: str
    routing: Routing = Field(default_factory=Routing)
    rules: list[RuleHit] = Field(default_factory=list)
    obligations: list[ApprovalObligation] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    signals: dict[str, Any] = Field(default_factory=dict)  # every signal value the decision used
    verification: Verification | None = None
    allowed_models: list[str] = Field(default_factory=list)  # user-switchable allowlist for this caller
    default_applied: bool = False  # no rule named the action: default deny
    limits: list[LimitHit] = Field(default_factory=list)  # the limits and budgets that count this request (chat)
    notes: list[str] = Field(default_factory=list)  # explanation that is not a rule hit (signal not supplied...)
    # `shadow` rules that fired: each with its span, its would-be effect and `because`; never enforced
    shadow: list[RuleHit] = Field(default_factory=list)
    shadow_effect: Effect | None = None  # the effect with the fired shadow rules enforced (None: none fired)
    policy_name: str = ""
    policy_version: int | str | None = None
    policy_hash: str = ""

    @property
    def model_chain(self) -> list[str]:
        """The routing chain: the models to try, primary first (the same list as `routing.chain`)."""
        return self.routing.chain


ROLES = ("app", "reviewer", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as established by an authenticated API key (never by request text).

    `tenant` scopes every query and decision; `roles` are a subset of `ROLES` (admin holds
    every role); `groups` name the reviewer groups the key belongs to; `attributes` are the
    key's authoritative attributes (e.g. `tenant_tier`, `channel`, `actor_role`).
    """

    tenant: str
    key_id: str
    subject: str
    roles: frozenset[str]
    groups: frozenset[str]
    attributes: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def has(self, *roles: str) -> bool:
        """True when the key holds any of `roles`, or is an admin key."""
        return "admin" in self.roles or any(r in self.roles for r in roles)
