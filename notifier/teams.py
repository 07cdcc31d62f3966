"""Microsoft Teams: a Workflows (Power Automate) webhook carrying an Adaptive Card.

Teams' "Post to a channel when a webhook request is received" workflow accepts
``{"type": "message", "attachments": [{"contentType":
"application/vnd.microsoft.card.adaptive", "content": <card>}]}``. Card buttons
are ``Action.OpenUrl`` to the signed review page: Teams never decides by itself.

A held chat's prompt and candidate answers (A, B, ...) are ``RichTextBlock`` text runs, which
Teams shows as plain text (no markdown, so model output cannot add links), cut with a note to
keep the card within Teams' size limit; with answers, there is an "Approve A…" / "Approve B…"
button per answer (the review page with that answer chosen), "Edit the answer…" and "Reject…".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
from policyengine.notifier.errors import DeliveryError, classify_status
from policyengine.notifier.notice import Notice
from policyengine.notifier.render import TemplateRenderer, clip, letter
from policyengine.notifier.webhook import check_target

if TYPE_CHECKING:
    from policyengine.netcheck import OutboundPolicy


PROMPT_MAX = 3000
ANSWER_MAX = 2000


def _plain(text: str, limit: int, **style: Any) -> dict[str, Any]:
    """Text shown as it is (a RichTextBlock's TextRun does not render markdown)."""
    return {"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": clip(text, limit), **style}]}


def build_card(notice: Notice, renderer: TemplateRenderer) -> dict[str, Any]:
    facts = [{"title": "Action", "value": notice.action_name}]
    if notice.tenant:
        facts.append({"title": "Tenant", "value": notice.tenant})
    if notice.requester:
        facts.append({"title": "Requested by", "value": notice.requester})
    facts += [{"title": str(k), "value": str(v)} for k, v in notice.fields.items()]
    if notice.timeout_at and notice.purpose != "decided":
        facts.append({"title": "If undecided", "value": f"{notice.on_timeout} at {notice.timeout_at:%Y-%m-%d %H:%M} UTC"})
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "size": "Medium", "weight": "Bolder", "text": notice.title, "wrap": True},
        {"type": "FactSet", "facts": facts},
        {"type": "TextBlock", "text": renderer.render("teams.md.j2", n=notice) or " ", "wrap": True},
    ]
    if notice.prompt:
        body += [{"type": "TextBlock", "weight": "Bolder", "text": notice.text_label, "wrap": True},
                 _plain(notice.prompt, PROMPT_MAX)]
    answers = list((notice.answers or {}).items())
    if answers:
        body.append(
            {
                "type": "ColumnSet",
                "columns": [
                    {
                        "type": "Column",
                        "width": "stretch",
                        "items": [
                            _plain(f"{letter(i)} · {model}", 200, weight="Bolder"),
                            _plain(answer, ANSWER_MAX),
                        ],
                    }
                    for i, (model, answer) in enumerate(answers)
                ],
            }
        )
    if notice.already_answered:
        body.append(_plain("The client was already answered with the first answer: this is a review after the fact.",
                           300, isSubtle=True))
    if notice.answer is not None:
        body.append(_plain("Released to the client: " + (f"the answer of {notice.answer_from}" if notice.answer_from
                                                         else "the reviewer's edited answer"), 300, weight="Bolder"))
    actions: list[dict[str, Any]] = []
    if notice.review_url and notice.purpose != "decided":
        if notice.choosing:  # the review page with that answer chosen: the reviewer confirms there
            actions = [{"type": "Action.OpenUrl", "title": f"Approve {letter(i)}…",
                        "url": f"{notice.review_url}?intent=approve&choice={quote('model:' + model, safe='')}"}
                       for i, (model, _) in enumerate(answers)]
            actions.append({"type": "Action.OpenUrl", "title": "Edit the answer…",
                            "url": f"{notice.review_url}?intent=approve&choice=edit"})
        else:
            actions = [{"type": "Action.OpenUrl", "title": "Approve…", "url": f"{notice.review_url}?intent=approve"}]
        actions.append({"type": "Action.OpenUrl", "title": "Reject…", "url": f"{notice.review_url}?intent=reject"})
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
        "actions": actions,
    }
    return card


def compose(notice: Notice, renderer: TemplateRenderer) -> dict[str, Any]:
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": build_card(notice, renderer)}
        ],
    }


class TeamsSender:
    """POSTs Adaptive Cards to Teams workflow webhooks, checked against the webhook outbound policy first
    (`policy`, default the settings'; see `policyengine.notifier.webhook.check_target`); no redirects."""

    def __init__(self, client: httpx.AsyncClient, *, policy: OutboundPolicy | None = None) -> None:
        self._client = client
        self._policy = policy

    async def post(self, url: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send `payload` to `url` once it passes the outbound check; `DeliveryError` on refusal or failure."""
        await check_target(url, "webhook", self._policy, "teams webhook")
        try:
            resp = await self._client.post(url, json=payload, follow_redirects=False)
        except httpx.HTTPError as e:
            raise DeliveryError(f"teams webhook: {type(e).__name__}: {e}")
        if resp.status_code >= 300:
            raise classify_status(resp.status_code, resp.text, "teams webhook", resp.headers.get("retry-after"))
        return {"status": resp.status_code}
