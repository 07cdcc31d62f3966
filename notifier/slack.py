"""Slack: a Block Kit message with Approve / Reject buttons, updated once decided.

Posting uses the Web API (``chat.postMessage`` / ``chat.update``) with a bot
token (scope ``chat:write``) through ``slack_sdk``'s async client, so the message
``ts`` is known and the message can be replaced by its outcome later, whichever
channel the decision came from. The reject reason is a plain-text input block in
the message itself; Slack sends its value with the button click.

A held chat shows its prompt and the candidate answers (A, B, ...) in their own sections, each
escaped and cut to Slack's 3000-character section limit with a note; with answers, the
approve buttons are "Approve A" / "Approve B" (`APPROVE_ANSWER_ACTION`), each value naming the
approval and the model whose answer is released (`answer_value` / `parse_answer_value`).
"""

from __future__ import annotations

import json
from typing import Any

from policyengine.notifier.errors import DeliveryError
from policyengine.notifier.notice import Notice
from policyengine.notifier.render import TemplateRenderer, letter, slack_escape
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

APPROVE_ACTION = "pe_approve"
REJECT_ACTION = "pe_reject"
REASON_BLOCK = "pe_reason"
REASON_ACTION = "pe_reason_input"
APPROVE_ANSWER_ACTION = "pe_approve_answer"  # "Approve A": action ids pe_approve_answer_0, _1, ...
SECTION_MAX = 3000  # Slack's limit on a section's text
MAX_ANSWERS = 4  # answers shown (and offered as buttons) in one message


def answer_value(approval_id: str, model: str) -> str:
    """The value of an "Approve <letter>" button: the approval and the model whose answer it releases."""
    return json.dumps({"approval_id": approval_id, "answer_from": model}, separators=(",", ":"))


def parse_answer_value(value: str) -> tuple[str, str] | None:
    """(approval id, model) from an "Approve <letter>" button's value, or None when it is not one."""
    try:
        data = json.loads(value)
    except (TypeError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("approval_id"), str) \
            or not isinstance(data.get("answer_from"), str):
        return None
    return data["approval_id"], data["answer_from"]


def is_answer_action(action_id: object) -> bool:
    return isinstance(action_id, str) and action_id.startswith(APPROVE_ANSWER_ACTION + "_")


def clipped(title: str, text: str, limit: int = SECTION_MAX) -> str:
    """A mrkdwn section text: `title` (already mrkdwn) then `text` escaped, cut so the whole fits
    `limit` characters, with a note of what was left out (the review page shows all of it)."""
    budget = limit - len(title) - 1
    body = slack_escape(text)
    if len(body) <= budget:
        return f"{title}\n{body}"
    keep = budget - 80
    raw = text[:keep]
    while len(slack_escape(raw)) > keep:  # escaping lengthens & < >: cut the raw text further
        raw = raw[:max(0, len(raw) - (len(slack_escape(raw)) - keep))]
    return f"{title}\n{slack_escape(raw)}…\n_({len(text) - len(raw)} more characters on the review page)_"


def _approve_button(action_id: str, label: str, value: str, what: str) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "style": "primary",
        "text": {"type": "plain_text", "text": label[:75]},
        "value": value,
        "confirm": {
            "title": {"type": "plain_text", "text": "Approve this action?"[:100]},
            "text": {"type": "plain_text", "text": what[:300]},
            "confirm": {"type": "plain_text", "text": "Approve"},
            "deny": {"type": "plain_text", "text": "Cancel"},
        },
    }


def build_blocks(notice: Notice, renderer: TemplateRenderer) -> tuple[str, list[dict[str, Any]]]:
    text = renderer.render("slack.md.j2", n=notice)
    # Slack caps a section's text at 3000 characters.
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text[:2990]}}]
    if notice.prompt:
        blocks.append({"type": "section", "block_id": "pe_prompt",
                       "text": {"type": "mrkdwn", "text": clipped(f"*{notice.text_label}*", notice.prompt)}})
    answers = list((notice.answers or {}).items())[:MAX_ANSWERS]
    for i, (model, answer) in enumerate(answers):
        blocks.append({"type": "section", "block_id": f"pe_answer_{i}",
                       "text": {"type": "mrkdwn", "text": clipped(f"*{letter(i)} · {slack_escape(model)}*", answer)}})
    if notice.already_answered:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
            "The client was already answered with the first answer: this is a review after the fact")}]})
    if notice.answers and len(notice.answers) > MAX_ANSWERS:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": (
            f"{len(notice.answers) - MAX_ANSWERS} more answer(s) on the review page")}]})
    if notice.purpose != "decided" and notice.state == "pending":
        blocks.append(
            {
                "type": "input",
                "block_id": REASON_BLOCK,
                "optional": True,
                "label": {"type": "plain_text", "text": "Reason (required to reject)"},
                "element": {"type": "plain_text_input", "action_id": REASON_ACTION, "multiline": False},
            }
        )
        if answers and notice.choosing:  # one approve button per answer: the client receives the one approved
            elements: list[dict[str, Any]] = [
                _approve_button(f"{APPROVE_ANSWER_ACTION}_{i}", f"Approve {letter(i)}",
                                answer_value(notice.approval_id, model),
                                f"The answer of {model} ({letter(i)}) will be released to the client.")
                for i, (model, _) in enumerate(answers)
            ]
        else:
            elements = [_approve_button(APPROVE_ACTION, "Approve", notice.approval_id,
                                        f"{notice.action_name} will be released.")]
        elements += [
            {
                "type": "button",
                "action_id": REJECT_ACTION,
                "style": "danger",
                "text": {"type": "plain_text", "text": "Reject"},
                "value": notice.approval_id,
            },
        ]
        if notice.review_url:
            elements.append(
                {"type": "button", "action_id": "pe_open",
                 "text": {"type": "plain_text", "text": "Edit the answer…" if notice.choosing else "Open review page"},
                 "url": f"{notice.review_url}?intent=approve&choice=edit" if notice.choosing else notice.review_url}
            )
        blocks.append({"type": "actions", "block_id": f"pe_actions_{notice.approval_id}", "elements": elements})
    blocks.append(
        {
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": f"approval `{notice.approval_id}` · hash `{notice.action_hash[:12]}`"}],
        }
    )
    return notice.title, blocks


def compose(notice: Notice, renderer: TemplateRenderer, channel: str) -> dict[str, Any]:
    text, blocks = build_blocks(notice, renderer)
    return {"channel": channel, "text": text, "blocks": blocks}


class SlackSender:
    def __init__(self, token: str, *, base_url: str = "https://slack.com/api/", timeout_s: float = 10) -> None:
        self._client = AsyncWebClient(token=token, base_url=base_url if base_url.endswith("/") else base_url + "/", timeout=int(timeout_s))

    async def _call(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await self._client.api_call(method, json=payload)
        except SlackApiError as e:
            err = (e.response.data or {}).get("error", "unknown") if e.response is not None else "unknown"
            status = e.response.status_code if e.response is not None else 0
            retriable = status == 429 or status >= 500 or err in ("ratelimited", "internal_error", "fatal_error", "service_unavailable")
            ra = None
            if e.response is not None and e.response.headers.get("retry-after"):
                try:
                    ra = float(e.response.headers["retry-after"])
                except (ValueError, TypeError):
                    ra = None
            raise DeliveryError(f"slack {method}: {err}", retriable=retriable, retry_after_s=ra)
        except (OSError, TimeoutError) as e:
            raise DeliveryError(f"slack {method}: {type(e).__name__}: {e}")
        return dict(resp.data) if isinstance(resp.data, dict) else {}

    async def post(self, payload: dict[str, Any]) -> dict[str, Any]:
        data = await self._call("chat.postMessage", payload)
        return {"channel": data.get("channel"), "ts": data.get("ts")}

    async def update(self, payload: dict[str, Any]) -> dict[str, Any]:
        data = await self._call("chat.update", payload)
        return {"channel": data.get("channel"), "ts": data.get("ts")}
