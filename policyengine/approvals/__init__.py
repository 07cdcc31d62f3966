"""Human in the loop: held actions, reviewers, notifications and timers.

`ApprovalService` (``policyengine.approvals.service``) is what the API calls:
``await services.approvals.hold(...)`` for require_approval / escalate decisions.
"""
