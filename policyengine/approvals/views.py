"""Rows to API shapes, and the small pure checks on what reviewers and apps send."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from policyengine.approvals.errors import ApprovalInvalid
from policyengine.approvals.hashing import action_view
from policyengine.approvals.models import ApprovalView, Outcome, Reason
from policyengine.approvals.states import State
from policyengine.netcheck import OutboundRefused, Purpose, redact_url
from policyengine.store.logger import redact_rules
from policyengine.store.redaction import Redactor


def check_url(url: str, what: str, purpose: Purpose | None = None) -> None:
    """Refuse (`ApprovalInvalid`, 422, with the reason) a URL the service must not send requests to.

    Always: it must be an http(s) URL with a host. With `purpose` (`"callback"`, `"webhook"`), also the
    outbound policy of that purpose from the settings (`POLICYENGINE_CALLBACK_HOSTS_ALLOW`, ...;
    `policyengine.netcheck`), as far as it is known without DNS: metadata, link-local and other
    always-refused literal addresses, literal addresses the policy does not admit, and hosts that
    cannot pass its allowlist. Names are resolved and checked again when the request is sent.
    """
    p = urlparse(url)
    if p.scheme not in ("http", "https") or not p.netloc:
        raise ApprovalInvalid(f"{what} must be an http(s) URL, got {redact_url(url)[:80]!r}")
    if purpose is not None:
        from policyengine.settings import default_outbound_rules

        try:
            getattr(default_outbound_rules(), purpose).check_static(url)
        except OutboundRefused as e:
            raise ApprovalInvalid(f"{what} refused: {e.message}") from None


def apply_edit(current: dict[str, Any], edit: dict[str, Any]) -> dict[str, Any]:
    allowed = {"fields", "text"}
    extra = set(edit) - allowed
    if extra:
        raise ApprovalInvalid(f"only {sorted(allowed)} of an action can be edited, not {sorted(extra)}")
    new = dict(current)
    if "fields" in edit:
        if not isinstance(edit["fields"], dict):
            raise ApprovalInvalid("edited fields must be an object")
        new["fields"] = edit["fields"]
    if "text" in edit:
        if edit["text"] is not None and not isinstance(edit["text"], str):
            raise ApprovalInvalid("edited text must be a string")
        new["text"] = edit["text"]
    return action_view(new)


MAX_ANSWER_CHARS = 20000  # a reviewer's edited answer


def choose_answer(answers: dict[str, str] | None, answer_from: str | None,
                  answer: str | None) -> tuple[str, str | None, bool] | None:
    """The answer an approval releases: (text, the model it is from or None for an edit, whether
    the reviewer chose it). None for an approval without answers and no choice.

    `answer_from` names one of `answers` (model name -> text); `answer` is the reviewer's own text
    (at most MAX_ANSWER_CHARS; one that is exactly a model's answer counts as that model's). With
    neither, the first answer is released. Refuses (`ApprovalInvalid`, 422) a choice on an approval
    without answers, an unknown model, both at once, and an empty or oversized edit.
    """
    if answer_from is None and answer is None:
        if not answers:
            return None
        first = next(iter(answers))
        return answers[first], first, False
    if not answers:
        raise ApprovalInvalid("this approval holds no model answers to choose from: approve it without "
                              "answer_from / answer")
    if answer_from is not None and answer is not None:
        raise ApprovalInvalid("choose one: answer_from (a model's answer as it is) or answer (your edited text)")
    if answer_from is not None:
        if answer_from not in answers:
            raise ApprovalInvalid(f"answer_from {str(answer_from)[:100]!r} is not one of this approval's answers "
                                  f"({', '.join(answers)})")
        return answers[answer_from], answer_from, True
    if not isinstance(answer, str) or not answer.strip():
        raise ApprovalInvalid("an edited answer must be non-empty text")
    if len(answer) > MAX_ANSWER_CHARS:
        raise ApprovalInvalid(f"the edited answer is too long ({len(answer)} characters, max {MAX_ANSWER_CHARS})")
    if "\x00" in answer:
        raise ApprovalInvalid("the edited answer must not contain NUL characters")
    same = next((m for m, t in answers.items() if t == answer), None)
    return answer, same, True


def redact_action(action: dict[str, Any], redactor: Redactor | None) -> dict[str, Any]:
    """A copy of `action` with the deployment's redacted fields hashed (`action` itself without a redactor)."""
    return redactor.redact(action) if redactor else action


def redact_decision(decision: dict[str, Any], redactor: Redactor | None) -> dict[str, Any]:
    """A copy of a Decision's JSON whose signals and explanations (`rules[].because`) show no
    redacted value (`decision` itself without a redactor)."""
    if not redactor:
        return decision
    out = dict(decision)
    if out.get("signals"):
        out["signals"] = redactor.redact(dict(out["signals"]))
    if out.get("rules"):
        out["rules"] = redact_rules(redactor, list(out["rules"]))
    return out


def restore_redacted(current: dict[str, Any], edit: dict[str, Any], redactor: Redactor | None) -> dict[str, Any]:
    """`edit` with every value that is the digest a reviewer was shown for a redacted value of
    `current` (at the same place) put back to that value: a reviewer who edits one field and
    sends the others back as they saw them does not overwrite a redacted value with its hash."""
    if not redactor:
        return edit
    shown = redactor.redact(current)

    def merge(new: Any, seen: Any, real: Any) -> Any:
        if isinstance(new, dict) and isinstance(seen, dict) and isinstance(real, dict):
            return {k: merge(v, seen.get(k), real.get(k)) if k in seen and k in real else v for k, v in new.items()}
        if isinstance(new, str) and new == seen and seen != real and new.startswith("redacted:"):
            return real
        return new

    return {k: merge(v, shown.get(k), current.get(k)) if k in current else v for k, v in edit.items()}


def reasons(decision: dict[str, Any]) -> list[Reason]:
    out = []
    for hit in decision.get("rules") or []:
        if hit.get("effect") in ("allow", None) and hit.get("kind") in ("route", "allow_choice", "authorize"):
            continue
        span = hit.get("span") or {}
        out.append(Reason(
            rule_id=hit.get("rule_id", ""), kind=hit.get("kind", ""), source=hit.get("source", ""),
            where=f"{span['file']}:{span['line']}" if span.get("file") else None, because=list(hit.get("because") or []),
        ))
    return out


_CHAT_RANK = {"review": 0, "hold": 1, "block": 2}


def already_answered(row: Any) -> bool:
    """True for the review case of a chat answered before review (`on chat review`): the client
    has its answer already, so approving it releases nothing (a choice of answer is only recorded)."""
    if row.action_name != "chat":
        return False
    modes = [str(ob.get("chat") or "hold") for ob in (row.decision_json or {}).get("obligations") or []
             if isinstance(ob, dict)] or ["hold"]
    return max(modes, key=lambda m: _CHAT_RANK.get(m, 1)) == "review"


def to_view(row: Any, redactor: Redactor | None = None) -> ApprovalView:
    """The API shape of an approval row; with `redactor`, its redacted fields are hashed everywhere
    (the action, signals and explanations), without it the action is exact."""
    decision = redact_decision(row.decision_json or {}, redactor)
    return ApprovalView(
        id=row.id, state=State(row.state), released=State(row.state).released, tenant=row.tenant, effect=row.effect,
        action_name=row.action_name, action=redact_action(row.action_json, redactor), action_hash=row.action_hash,
        revision=row.revision,
        original_action_hash=row.original_action_hash, edited=row.revision > 1, groups=list(row.groups or []),
        reasons=reasons(decision), signals=dict(decision.get("signals") or {}), tags=list(decision.get("tags") or []),
        answers=row.answers_json, answer=row.released_answer, answer_from=row.released_answer_from,
        already_answered=already_answered(row),
        requester=row.requester_subject or row.requester_key_id, actor=row.requester_actor,
        created_at=row.created_at,
        updated_at=row.updated_at, timeout_at=row.timeout_at, on_timeout=row.on_timeout, escalate_to=row.escalate_to,
        next_reminder_at=row.next_reminder_at, reminders_sent=row.reminders_sent, escalations=row.escalations,
        decided_at=row.decided_at, decided_by=row.decided_by, decided_via=row.decided_via, reason=row.reason,
        policy_name=row.policy_name, policy_hash=row.policy_hash, decision_id=row.decision_id, version=row.version,
    )


def outcome(row: Any, redactor: Redactor | None = None) -> Outcome:
    """The signed outcome an application is called back with; with `redactor`, the action's redacted
    fields are hashed (the form stored in the outbox; the exact action is filled in when sending)."""
    return Outcome(
        approval_id=row.id, state=State(row.state), released=State(row.state).released, action_hash=row.action_hash,
        original_action_hash=row.original_action_hash, revision=row.revision,
        action=redact_action(row.action_json, redactor),
        decided_at=row.decided_at, decided_by=row.decided_by, decided_via=row.decided_via, reason=row.reason,
    )
