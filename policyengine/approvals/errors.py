"""Errors the approvals service raises; each names the HTTP status it stands for."""

from __future__ import annotations

from policyengine.errors import PolicyEngineError


class ApprovalError(PolicyEngineError):
    """An approval operation refused; `status_code` is the HTTP status it stands for."""

    status_code = 400
    code = "approval_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)


class ApprovalNotFound(ApprovalError):
    status_code = 404
    code = "approval_not_found"


class ApprovalForbidden(ApprovalError):
    status_code = 403
    code = "approval_forbidden"


class ApprovalConflict(ApprovalError):
    """The approval was already decided (first decision wins)."""

    status_code = 409
    code = "approval_already_decided"


class ApprovalInvalid(ApprovalError):
    status_code = 422
    code = "approval_invalid"


class LinkRefused(ApprovalError):
    """An expired, reused or forged review link."""

    status_code = 410
    code = "review_link_refused"
