"""What a notification says: everything a reviewer needs, channel-independent."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

Purpose = Literal["request", "reminder", "escalated", "decided"]


class Reason(BaseModel):
    """Why the action was held: one rule and the comparisons that made it fire."""

    rule_id: str
    kind: str = ""
    source: str = ""
    where: str | None = None  # file:line
    because: list[str] = Field(default_factory=list)


class Notice(BaseModel):
    approval_id: str
    purpose: Purpose
    tenant: str | None = None
    action_name: str
    action: dict[str, Any]
    action_hash: str
    revision: int = 1
    effect: str = "require_approval"
    groups: list[str] = Field(default_factory=list)
    reasons: list[Reason] = Field(default_factory=list)
    signals: dict[str, Any] = Field(default_factory=dict)
    answers: dict[str, str] | None = None  # a held chat's candidate answers (model -> text), shown A, B, ...
    answer: str | None = None  # once approved: the answer released to the client
    answer_from: str | None = None  # the model it is from (None: the reviewer's edit)
    already_answered: bool = False  # a chat answered before review: approving releases nothing

    @property
    def choosing(self) -> bool:
        """The reviewer picks the answer the client receives (A, B or an edit)."""
        return bool(self.answers) and not self.already_answered
    requester: str | None = None
    state: str = "pending"
    decided_by: str | None = None
    decision_reason: str | None = None
    review_url: str | None = None  # signed, expiring, single-use link for this recipient
    status_url: str | None = None
    timeout_at: datetime | None = None
    on_timeout: str | None = None
    reminders_sent: int = 0
    policy_name: str | None = None

    @property
    def title(self) -> str:
        verb = {
            "request": "Approval needed",
            "reminder": "Reminder: approval still needed",
            "escalated": "Escalated: approval needed",
            "decided": f"Approval {self.state}",
        }[self.purpose]
        return f"{verb}: {self.action_name}"

    @property
    def fields(self) -> dict[str, Any]:
        return dict(self.action.get("fields") or {})

    @property
    def prompt(self) -> str | None:
        """The held action's text: a held chat's prompt (None when it has none)."""
        text = self.action.get("text")
        return text if isinstance(text, str) and text else None

    @property
    def text_label(self) -> str:
        """What the action's text is called: the prompt of a chat, else the text."""
        return "Prompt" if self.answers or self.action_name == "chat" else "Text"
