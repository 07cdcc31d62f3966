"""What a gateway path raises instead of answering.

Each error says what happened in the engine's terms (denied, held, the log is down, every
model failed), never in HTTP's: `policyengine.api.errors` maps each class to a status and
an error body, once, for every route and dialect. Every error raised after a decision was
made carries that decision (`decision_id`, `decision`) and the upstream `attempts`, so the
transport can show them (headers, error body) without looking anything up.
"""

from __future__ import annotations

from typing import Any

from policyengine.errors import PolicyEngineError
from policyengine.types import Decision

__all__ = [
    "ApprovalRefused",
    "ApprovalRequired",
    "ApprovalsUnavailable",
    "DecisionLogUnavailable",
    "EvaluationFailed",
    "GatewayError",
    "InvalidAction",
    "LimitExceeded",
    "LimitsUnavailable",
    "ModelNotAllowed",
    "NoRoute",
    "PolicyDenied",
    "TenantMismatch",
    "UntrustedInput",
    "UpstreamFailed",
    "VerificationFailed",
]


class GatewayError(PolicyEngineError):
    """Base of the gateway's errors.

    `decision_id` / `decision` are set once a decision exists (it was committed unless the
    error is `DecisionLogUnavailable`); `attempts` lists the upstream attempts made, as JSON
    dicts; `param` names the request field at fault, when one is; `extra` holds further
    machine-readable detail for the error body.
    """

    code = "gateway_error"

    def __init__(self, message: str, *, code: str | None = None, decision_id: str | None = None,
                 decision: Decision | None = None, attempts: list[dict[str, Any]] | None = None,
                 param: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message, code=code)
        self.decision_id = decision_id
        self.decision = decision
        self.attempts = attempts or []
        self.param = param
        self.extra = extra or {}


class InvalidAction(GatewayError):
    """The request does not describe a valid action (a field missing, mistyped or too long)."""

    code = "invalid_action"


class TenantMismatch(GatewayError):
    """The request names a tenant other than the API key's."""

    code = "tenant_mismatch"


class UntrustedInput(GatewayError):
    """The request sets something only a trusted key may set: precomputed `signals`, or the
    actor role, channel or tenant tier. `extra['attribute']` names the API key attribute that
    would allow it (`trusted_signals` or `trusted_fields`)."""

    code = "untrusted_input"


class EvaluationFailed(GatewayError):
    """The policy could not be evaluated on this action (a value of the wrong kind)."""

    code = "evaluation_error"


class PolicyDenied(GatewayError):
    """The policy denied the request; the decision row is committed."""

    code = "policy_denied"


class ModelNotAllowed(GatewayError):
    """The caller named a model that is not on its allowlist; `extra['allowed_models']`."""

    code = "model_not_allowed"


class ApprovalRequired(GatewayError):
    """The request is held for a human; `extra['approval']` is the approval created (or None
    when no approvals service runs) and `extra['effect']` the held effect."""

    code = "approval_required"


class ApprovalRefused(GatewayError):
    """The approval a held request waited for ended without releasing it (rejected, expired or
    cancelled); `extra['approval']` says by whom and why."""

    code = "approval_rejected"


class NoRoute(GatewayError):
    """The policy gives no model chain for this request."""

    code = "no_route"


class DecisionLogUnavailable(GatewayError):
    """The decision row could not be committed: the decision must not be acted on."""

    code = "decision_log_unavailable"


class ApprovalsUnavailable(GatewayError):
    """The decision was committed as held, but its approval could not be created."""

    code = "approvals_unavailable"


class VerificationFailed(GatewayError):
    """A dual-model verification rule cannot run (e.g. its models are misconfigured)."""

    code = "verification_error"


class LimitExceeded(GatewayError):
    """A `limit` or `budget` refuses the request until its window ends (`retry_after` seconds):
    HTTP 429 with `Retry-After`, the limit in `extra["limit"]`."""

    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class LimitsUnavailable(GatewayError):
    """The limit counters cannot be reached and a limit counting the request fails closed (503)."""

    code = "limits_unavailable"


class UpstreamFailed(GatewayError):
    """Every model in the chain failed, or a fatal upstream error stopped the request.

    `error_class` is retry, failover or fatal; `code` is the classified reason (e.g.
    `rate_limited`, `context_length_exceeded`); `status` and `upstream` are the last
    upstream's HTTP status and error body; `retry_after` (seconds) is set when the chain was
    rate limited and says when to come back.
    """

    code = "upstream_failed"

    def __init__(self, message: str, *, error_class: str, reason: str, status: int | None = None,
                 upstream: Any = None, upstream_model: str | None = None, retry_after: float | None = None,
                 **kw: Any) -> None:
        super().__init__(message, code=reason, **kw)
        self.error_class = error_class
        self.reason = reason
        self.status = status
        self.upstream = upstream
        self.upstream_model = upstream_model
        self.retry_after = retry_after
