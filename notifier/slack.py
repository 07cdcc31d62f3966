"""Slack: a Block Kit message with Approve / Reject buttons, updated once decided.

Posting uses the Web API (``chat.postMessage`` / ``chat.update``) with a bot
token (scope ``chat:write``) through ``slack_sdk``'s async client, so the message
``ts`` is known and the message can be replaced by its outcome later, whichever
channel the decision came from. The reject reason is a plain-text input block in
the message itself; Slack sends its value with the button click.
"""

from __future__ import annotations

from typing import Any

from policyengine.notifier.errors import DeliveryError
from policyengine.notifier.notice import Notice
from policyengine.notifier.render import TemplateRenderer
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

APPROVE_ACTION = "pe_approve"
REJECT_ACTION = "pe_reject"
REASON_BLOCK = "pe_reason"
REASON_ACTION = "pe_reason_input"


def build_blocks(notice: Notice, renderer: TemplateRenderer) -> tuple[str, list[dict[str, Any]]]:
    text = renderer.render("slack.md.j2", n=notice)
    # Slack caps a section's text at 3000 characters.
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": text[:2990]}}]
    if notice.answers:
        for model, answer in list(notice.answers.items())[:4]:
            blocks.append(
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{model}*\n{answer[:2900]}".replace("<", "&lt;")}}
            )
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
        elements: list[dict[str, Any]] = [
            {
                "type": "button",
                "action_id": APPROVE_ACTION,
                "style": "primary",
                "text": {"type": "plain_text", "text": "Approve"},
                "value": notice.approval_id,
                "confirm": {
                    "title": {"type": "plain_text", "text": "Approve this action?"},
                    "text": {"type": "plain_text", "text": f"{notice.action_name} will be released."},
                    "confirm": {"type": "plain_text", "text": "Approve"},
                    "deny": {"type": "plain_text", "text": "Cancel"},
                },
            },
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
                {"type": "button", "action_id": "pe_open", "text": {"type": "plain_text", "text": "Open review page"}, "url": notice.review_url}
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
