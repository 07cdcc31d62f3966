"""The approval state machine.

    pending --approve--------> approved      (action released; maybe an edited revision)
    pending --reject---------> rejected
    pending --timeout(deny)--> expired
    pending --timeout(approve)-> approved    (decided_by "system:timeout")
    pending --timeout(escalate)-> pending    (group moves to `escalate_to`, deadline restarts)
    pending --cancel---------> cancelled

Every terminal state is final: a later decision gets 409 Conflict.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    pending = "pending"
    approved = "approved"
    rejected = "rejected"
    expired = "expired"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self is not State.pending

    @property
    def released(self) -> bool:
        """True when the application may execute the action."""
        return self is State.approved


TRANSITIONS: dict[State, frozenset[State]] = {
    State.pending: frozenset({State.approved, State.rejected, State.expired, State.cancelled, State.pending}),
    State.approved: frozenset(),
    State.rejected: frozenset(),
    State.expired: frozenset(),
    State.cancelled: frozenset(),
}


def can_transition(src: State, dst: State) -> bool:
    return dst in TRANSITIONS[src]


class Via(StrEnum):
    """Where a transition came from (audit)."""

    api = "api"
    review_page = "review_page"
    email = "email"
    slack = "slack"
    teams = "teams"
    webhook = "webhook"  # a webhook link, the receiver vouching for the reviewer
    console = "console"  # the web console, logged in with the reviewer's API key
    timer = "timer"
    system = "system"
