"""Human in the loop: held actions, reviewers, notifications and timers.

`ApprovalService` (``policyengine.approvals.service``) is what the API calls:
``await services.approvals.hold(...)`` for require_approval / escalate decisions.
Its failures are `ApprovalError`s (``policyengine.approvals.errors``, a `PolicyEngineError`).
The package re-exports nothing, so importing it does not load the service; import from the
submodules.
"""

__all__: list[str] = []
