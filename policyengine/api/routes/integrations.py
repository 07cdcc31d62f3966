"""Slack interactivity: the Approve / Reject buttons of approval messages.

Slack POSTs ``application/x-www-form-urlencoded`` with ``payload=<json>`` and
signs it (``X-Slack-Signature: v0=HMAC_SHA256(signing_secret, "v0:<ts>:<body>")``,
``X-Slack-Request-Timestamp``). The body is read with a running size count against
``max_body_bytes`` (413 past it, before the signature is checked and without
buffering more). A request with a bad signature, or a timestamp
more than five minutes away from now (a replay), is refused with 401 before
anything is parsed. A click decides only when its channel and message ``ts`` are
those of a message delivered for that approval. The decision then goes through the same compare-and-set as
every other channel; the message is replaced by its outcome (``chat.update``)
through the outbox, and errors are shown to the clicking user as an ephemeral
message through ``response_url``. For a held chat's answers the approve buttons are
"Approve A" / "Approve B" (``pe_approve_answer_<i>``); the button's value names the approval
and the model whose answer is released to the client.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import parse_qs

import httpx
from fastapi import APIRouter, BackgroundTasks, Request
from slack_sdk.signature import SignatureVerifier
from starlette.responses import Response

from policyengine.api.errors import ApiError, json_response
from policyengine.api.http import read_body
from policyengine.api.routes.approvals import service_of
from policyengine.approvals.errors import ApprovalError
from policyengine.notifier.slack import (
    APPROVE_ACTION,
    REASON_ACTION,
    REASON_BLOCK,
    REJECT_ACTION,
    is_answer_action,
    parse_answer_value,
)

router = APIRouter(tags=["integrations"])
log = logging.getLogger("policyengine.approvals.slack")


def _verify(request: Request, body: bytes, secret: str, tolerance_s: int) -> None:
    ts = request.headers.get("x-slack-request-timestamp", "")
    sig = request.headers.get("x-slack-signature", "")
    try:
        ts_i = int(ts)
    except ValueError:
        raise ApiError(401, "missing or malformed X-Slack-Request-Timestamp", code="slack_signature_invalid")
    if abs(time.time() - ts_i) > tolerance_s:
        raise ApiError(401, "Slack request timestamp outside the 5-minute window (replay refused)",
                       code="slack_request_expired")
    if not SignatureVerifier(secret).is_valid(body=body, timestamp=ts, signature=sig):
        raise ApiError(401, "Slack signature does not match", code="slack_signature_invalid")


async def _ephemeral(url: str, text: str) -> None:
    try:
        async with httpx.AsyncClient(timeout=10) as c:
            await c.post(url, json={"response_type": "ephemeral", "replace_original": False, "text": text})
    except httpx.HTTPError as exc:  # pragma: no cover - best effort
        log.warning("could not answer Slack response_url: %s", exc)


def _message_ts(payload: dict[str, Any]) -> str | None:
    """The ts of the message whose button was clicked (`container.message_ts`, else `message.ts`)."""
    for ts in ((payload.get("container") or {}).get("message_ts"), (payload.get("message") or {}).get("ts")):
        if isinstance(ts, str) and ts:
            return ts
    return None


def _reason(payload: dict[str, Any]) -> str | None:
    values = ((payload.get("state") or {}).get("values") or {}).get(REASON_BLOCK) or {}
    value = (values.get(REASON_ACTION) or {}).get("value")
    return value.strip() if isinstance(value, str) and value.strip() else None


@router.post("/v1/integrations/slack/interactivity", summary="Slack interactivity Request URL")
async def slack_interactivity(request: Request, background: BackgroundTasks) -> Response:
    svc = service_of(request)
    secret = svc.settings.slack_signing_secret
    if secret is None:
        raise ApiError(503, "Slack is not configured (POLICYENGINE_APPROVALS_SLACK_SIGNING_SECRET)", code="slack_not_configured")
    body = await read_body(request)
    _verify(request, body, secret.get_secret_value(), svc.settings.slack_timestamp_tolerance_s)
    try:
        payload = json.loads(parse_qs(body.decode("utf-8")).get("payload", [""])[0])
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "Slack payload is not valid JSON", code="invalid_request")
    if not isinstance(payload, dict) or payload.get("type") != "block_actions":
        return Response(status_code=200)  # other interaction types are not ours
    actions = [a for a in payload.get("actions") or [] if isinstance(a, dict) and (
        a.get("action_id") in (APPROVE_ACTION, REJECT_ACTION) or is_answer_action(a.get("action_id")))]
    if not actions:
        return Response(status_code=200)  # e.g. the "open review page" link button
    act = actions[0]
    approve = act["action_id"] != REJECT_ACTION
    approval_id, answer_from = str(act.get("value", "")), None
    if is_answer_action(act["action_id"]):  # "Approve A": the value names the approval and the model
        parsed = parse_answer_value(approval_id)
        if parsed is None:
            raise ApiError(400, "the Slack button's value does not name an approval and an answer",
                           code="invalid_request")
        approval_id, answer_from = parsed
    user = payload.get("user") or {}
    response_url = payload.get("response_url")
    reply_ok = isinstance(response_url, str) and response_url.startswith(svc.settings.slack_response_url_prefix)
    reason = _reason(payload)
    if not approve and not reason:
        if reply_ok:
            background.add_task(_ephemeral, response_url, "Type a reason in the box above, then press Reject.")
        return Response(status_code=200)
    try:
        view = await svc.decide_from_slack(
            approval_id, answer_from=answer_from, user_id=str(user.get("id", "")), user_names=[user.get("username"), user.get("name")],
            approve=approve, reason=reason, channel_id=(payload.get("channel") or {}).get("id"),
            message_ts=_message_ts(payload), ip=request.client.host if request.client else None,
        )
    except ApprovalError as exc:
        if reply_ok:
            background.add_task(_ephemeral, response_url, f":no_entry: {exc.message}")
        return json_response({"ok": False, "error": exc.code}, status=200)
    return json_response({"ok": True, "approval_id": view.id, "state": view.state.value})
