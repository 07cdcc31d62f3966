"""A held chat's prompt and candidate answers, everywhere a reviewer decides, and the reviewer's
choice of the answer released: Slack ("Approve A" / "Approve B"), Teams and email (a link per
choice to the review page), the notices' renderings (escaped, cut to each channel's limits)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest
from policyengine.notifier import Notice, TemplateRenderer
from policyengine.notifier import email as email_channel
from policyengine.notifier import slack as slack_channel
from policyengine.notifier import teams as teams_channel

from approvals.conftest import TOKENS
from approvals.harness import parts
from approvals.helpers import make_service, refund_action, refund_decision, reviewer
from approvals.test_e2e import api, slack_click, slack_delivered, slack_headers, until
from policyengine.approvals.errors import ApprovalInvalid

PROMPT = "Was my refund for order <A-1001> approved? Tom & Jerry's account."
A = "Yes: the refund of 150 GBP was approved on 3 March."
B = "No. The refund was <b>refused</b> on 3 March & you owe us 500 GBP."
ANSWERS = {"qwen-72b": A, "gemma-27b": B}


def _notice(**kw: Any) -> Notice:
    base: dict[str, Any] = dict(
        approval_id="apr_1", purpose="request", tenant="acme", action_name="chat", action={"text": PROMPT},
        action_hash="ab" * 32, effect="escalate", answers=ANSWERS, review_url="https://pe.example/review/tok")
    base.update(kw)
    return Notice(**base)


def _slack_texts(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(b["text"]["text"] for b in blocks if b.get("type") == "section")


def test_slack_blocks_show_the_prompt_and_both_answers_with_a_button_per_answer():
    _, blocks = slack_channel.build_blocks(_notice(), TemplateRenderer())
    text = _slack_texts(blocks)
    assert "order &lt;A-1001&gt; approved? Tom &amp; Jerry" in text  # the prompt, escaped
    assert "*A · qwen-72b*\n" + A in text and "*B · gemma-27b*" in text
    assert "&lt;b&gt;refused&lt;/b&gt; on 3 March &amp; you owe us" in text  # no markup from the model
    buttons = next(b for b in blocks if b["type"] == "actions")["elements"]
    labels = [e["text"]["text"] for e in buttons]
    assert labels == ["Approve A", "Approve B", "Reject", "Edit the answer…"]
    assert [slack_channel.parse_answer_value(e["value"]) for e in buttons[:2]] == [
        ("apr_1", "qwen-72b"), ("apr_1", "gemma-27b")]
    assert buttons[3]["url"].endswith("?intent=approve&choice=edit")
    ids = [e["action_id"] for e in buttons]
    assert len(set(ids)) == len(ids)  # Slack refuses duplicate action ids in a block


def test_slack_cuts_long_prompts_and_answers_to_the_section_limit():
    long = "&<" * 4000 + "the end"  # escaping doubles and triples these: the cut is made after it
    _, blocks = slack_channel.build_blocks(_notice(action={"text": long}, answers={"qwen-72b": long, "gemma-27b": B}),
                                           TemplateRenderer())
    sections = [b["text"]["text"] for b in blocks if b.get("type") == "section"]
    assert all(len(t) <= slack_channel.SECTION_MAX for t in sections)
    assert sum("more characters on the review page" in t for t in sections) == 2
    assert not any(t.rstrip("…").endswith("&am") for t in sections)  # no half escape


def test_slack_without_answers_keeps_one_approve_button():
    _, blocks = slack_channel.build_blocks(_notice(action_name="refund", answers=None, action={"fields": {"a": 1}}),
                                           TemplateRenderer())
    buttons = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert [e["action_id"] for e in buttons] == [slack_channel.APPROVE_ACTION, slack_channel.REJECT_ACTION, "pe_open"]
    assert buttons[0]["value"] == "apr_1"


def test_slack_decided_message_says_which_answer_was_released():
    _, blocks = slack_channel.build_blocks(_notice(purpose="decided", state="approved", decided_by="slack:U1",
                                                   answer=B, answer_from="gemma-27b"), TemplateRenderer())
    assert "Released to the client: the answer of *gemma-27b*" in _slack_texts(blocks)
    assert not any(b["type"] == "actions" for b in blocks)


def test_teams_card_shows_the_prompt_and_answers_as_plain_text_with_a_link_per_choice():
    card = teams_channel.build_card(_notice(), TemplateRenderer())
    runs = [i["text"] for b in json.loads(json.dumps(card["body"])) for i in _inlines(b)]
    assert PROMPT in runs and A in runs and B in runs  # TextRuns: shown as they are, no markdown
    assert "A · qwen-72b" in runs and "B · gemma-27b" in runs
    titles = {a["title"]: a["url"] for a in card["actions"]}
    assert list(titles) == ["Approve A…", "Approve B…", "Edit the answer…", "Reject…"]
    assert titles["Approve B…"].endswith("?intent=approve&choice=model%3Agemma-27b")


def _inlines(block: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = list(block.get("inlines") or [])
    for col in block.get("columns") or []:
        for item in col.get("items") or []:
            out += _inlines(item)
    return out


def test_email_text_and_html_show_the_prompt_and_both_answers_escaped():
    msg = email_channel.compose(_notice(), TemplateRenderer(), "rita@example.com")
    text, html = msg["text"], msg["html"]
    assert "Prompt:\n" + PROMPT in text and "--- A · qwen-72b ---\n" + A in text and "--- B · gemma-27b ---\n" + B in text
    assert "Approve B (gemma-27b): https://pe.example/review/tok?intent=approve&choice=model%3Agemma-27b" in text
    assert "order &lt;A-1001&gt; approved? Tom &amp; Jerry&#39;s" in html
    assert "&lt;b&gt;refused&lt;/b&gt;" in html and "<b>refused" not in html
    assert "?intent=approve&amp;choice=model%3Aqwen-72b" in html and ">Approve A…</a>" in html


def test_email_clips_a_huge_prompt():
    msg = email_channel.compose(_notice(action={"text": "x" * 50000}), TemplateRenderer(), "rita@example.com")
    assert "[40000 more characters: see the review page]" in msg["text"]
    assert len(msg["text"]) < 20000


# ------------------------------------------------------------------------------ the service


@pytest.fixture
async def svc(tmp_path):
    service, db = await make_service(f"sqlite:///{tmp_path}/ans.db")
    yield service
    await db.aclose()


async def _held(svc) -> str:
    res = await svc.hold(action=refund_action(), decision=refund_decision(), answers=ANSWERS)
    return res.approval_id


async def test_the_chosen_answer_is_stored_and_audited(svc):
    approval_id = await _held(svc)
    view = await svc.decide(approval_id, reviewer(), approve=True, answer_from="gemma-27b")
    assert (view.answer, view.answer_from) == (B, "gemma-27b")
    assert (await svc.get(approval_id)).answer == B  # persisted
    event = next(e for e in await svc.audit_trail(approval_id) if e.kind == "approved")
    assert event.details["released_answer"]["from"] == "gemma-27b" and "text" not in event.details["released_answer"]


async def test_an_edited_answer_is_stored_with_its_text_in_the_audit(svc):
    approval_id = await _held(svc)
    view = await svc.decide(approval_id, reviewer(), approve=True, answer="Please call us on Monday.")
    assert (view.answer, view.answer_from) == ("Please call us on Monday.", None)
    released = next(e for e in await svc.audit_trail(approval_id) if e.kind == "approved").details["released_answer"]
    assert released["edited"] and released["text"] == "Please call us on Monday." and released["chars"] == 25


async def test_an_edit_equal_to_a_models_answer_counts_as_that_answer(svc):
    approval_id = await _held(svc)
    view = await svc.decide(approval_id, reviewer(), approve=True, answer=B)
    assert view.answer_from == "gemma-27b"


@pytest.mark.parametrize("choice, message", [
    ({"answer_from": "kimi-large"}, "not one of this approval's answers"),
    ({"answer_from": "qwen-72b", "answer": "x"}, "choose one"),
    ({"answer": ""}, "non-empty"),
    ({"answer": "x" * 20001}, "too long"),
    ({"answer": "a\x00b"}, "NUL"),
])
async def test_bad_choices_are_refused_and_audited(svc, choice, message):
    approval_id = await _held(svc)
    with pytest.raises(ApprovalInvalid, match=message):
        await svc.decide(approval_id, reviewer(), approve=True, **choice)
    assert (await svc.get(approval_id)).state == "pending"
    assert any(e.kind == "refused" for e in await svc.audit_trail(approval_id))


async def test_a_choice_without_answers_or_on_a_rejection_is_refused(svc):
    res = await svc.hold(action=refund_action(), decision=refund_decision())
    with pytest.raises(ApprovalInvalid, match="no model answers"):
        await svc.decide(res.approval_id, reviewer(), approve=True, answer_from="qwen-72b")
    approval_id = await _held(svc)
    with pytest.raises(ApprovalInvalid, match="only be chosen when approving"):
        await svc.decide(approval_id, reviewer(), approve=False, reason="no", answer_from="qwen-72b")
    view = await svc.decide(approval_id, reviewer(), approve=False, reason="neither")
    assert view.answer is None


# --------------------------------------------------------------------------- end to end


async def _hold_with_answers(stack, action: str = "refund") -> str:
    fields = {"amount": "150 GBP", "order": "A-1001"} if action == "refund" else {}
    async with api(stack, "app") as app:
        r = await app.post("/v1/evaluate", json={"action": action, "actor": "agent-7", "fields": fields,
                                                 "text": PROMPT, "answers": ANSWERS})
    assert r.json()["effect"] == "require_approval", r.text
    return r.json()["approval"]["approval_id"]


@pytest.mark.slow
async def test_slack_approve_b_releases_b_and_email_shows_both(stack):
    approval_id = await _hold_with_answers(stack)
    posted = await until(lambda: stack.rec.on("/api/chat.postMessage"), what="the Slack message")
    blocks = posted[0].json()["blocks"]
    assert "Tom &amp; Jerry" in _slack_texts(blocks) and "&lt;b&gt;refused" in _slack_texts(blocks)
    button_b = next(e for b in blocks if b["type"] == "actions" for e in b["elements"]
                    if e["text"]["text"] == "Approve B")
    ts = (await until(lambda: stack.rec.slack_ts, what="the posted message's ts"))[0]
    await slack_delivered(stack, approval_id)
    # the click on "Approve B" as Slack sends it: that button's action id and value, on the posted message
    payload = json.loads(parse_qs(slack_click(approval_id, "unused", message_ts=ts).decode())["payload"][0])
    payload["actions"] = [{"action_id": button_b["action_id"], "value": button_b["value"], "type": "button"}]
    body = urlencode({"payload": json.dumps(payload)}).encode()
    bad = json.loads(json.dumps(payload))
    bad["actions"][0]["value"] = slack_channel.answer_value(approval_id, "kimi-large")  # not one of the answers
    bad_body = urlencode({"payload": json.dumps(bad)}).encode()
    async with httpx.AsyncClient(timeout=30) as http:
        url = f"{stack.url}/v1/integrations/slack/interactivity"
        refused = await http.post(url, content=bad_body, headers=slack_headers(bad_body))
        assert refused.status_code == 200 and refused.json() == {"ok": False, "error": "approval_invalid"}
        ok = await http.post(url, content=body, headers=slack_headers(body))
        assert ok.status_code == 200 and ok.json()["ok"], ok.text
    async with api(stack, "app") as app:
        view = (await app.get(f"/v1/approvals/{approval_id}")).json()
    assert view["state"] == "approved" and view["decided_by"] == "slack:U0RITA"
    assert view["answer"] == B and view["answer_from"] == "gemma-27b"
    updated = await until(lambda: stack.rec.on("/api/chat.update"), what="the message replaced by its outcome")
    assert "Released to the client: the answer of *gemma-27b*" in _slack_texts(updated[0].json()["blocks"])
    mail = await until(lambda: stack.smtp.messages, what="the email")
    text = parts(mail[0])
    assert PROMPT in text["plain"] and A in text["plain"] and B in text["plain"]
    assert "&lt;b&gt;refused&lt;/b&gt;" in text["html"] and "Tom &amp; Jerry" in text["html"]


@pytest.mark.slow
async def test_teams_approve_b_link_opens_the_page_with_b_chosen(stack):
    approval_id = await _hold_with_answers(stack, "respond_press")
    posted = await until(lambda: stack.rec.on("/teams"), what="the Teams card")
    card = posted[0].json()["attachments"][0]["content"]
    url_b = next(a["url"] for a in card["actions"] if a["title"] == "Approve B…")
    async with httpx.AsyncClient(timeout=30) as http:
        page = await http.get(url_b)
        assert page.status_code == 200 and 'value="model:gemma-27b" id="choice-2" checked' in page.text
        assert "Tom &amp; Jerry" in page.text and "&lt;b&gt;refused&lt;/b&gt;" in page.text  # escaped
        done = await http.post(url_b.split("?")[0], data={"decision": "approve", "choice": "model:gemma-27b"})
        assert done.status_code == 200 and "gemma-27b" in done.text
    async with httpx.AsyncClient(base_url=stack.url, headers={"Authorization": f"Bearer {TOKENS['app']}"}) as app:
        view = (await app.get(f"/v1/approvals/{approval_id}")).json()
    assert view["answer"] == B and view["decided_via"] == "teams"


def test_a_chat_answered_before_review_gets_one_approve_button_and_no_choice_links():
    n = _notice(answers={"qwen-72b": A}, already_answered=True)
    _, blocks = slack_channel.build_blocks(n, TemplateRenderer())
    buttons = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert [e["action_id"] for e in buttons] == [slack_channel.APPROVE_ACTION, slack_channel.REJECT_ACTION, "pe_open"]
    assert A in _slack_texts(blocks)
    assert [a["title"] for a in teams_channel.build_card(n, TemplateRenderer())["actions"]] == ["Approve…", "Reject…"]
    msg = email_channel.compose(n, TemplateRenderer(), "rita@example.com")
    assert "choice=" not in msg["text"] and "choice=" not in msg["html"] and "already answered" in msg["text"]
