"""Held chats resume: the real `openai` SDK through the gateway. A chat held for review (a litigation
mention held before the model is called; divergent dual answers) gets its completion once a reviewer
decides: by waiting, or by resending with the same Idempotency-Key or the approval id, never through a
second hold. Per rule, a hold on chat may also mean "answer, then review" or "refuse"."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx
import openai
import pytest

LEGAL = [{"role": "user", "content": "My solicitor will start legal action over order 77 unless you fix it."}]


def sdk(service) -> openai.AsyncOpenAI:
    return service.sdk("app")


async def _approve_by_link(service, approval_id: str, *, decision: str = "approve", reason: str = "",
                           shows: str = "solicitor") -> None:
    """A reviewer opens the signed review link and decides there (the page a notification links to)."""
    url = service.runtime.approvals.issue_link(approval_id, "email:rita@acme.example")
    path = urlsplit(url).path
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as c:
        page = await c.get(path)
        assert page.status_code == 200 and shows in page.text  # the reviewer sees what is held
        done = await c.post(path, data={"decision": decision, "reason": reason})
    assert done.status_code == 200, done.text


async def _approvals(service) -> list[dict]:
    async with service.client("reviewer") as c:
        r = await c.get("/v1/approvals", params={"state": "all"})
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def test_held_chat_resumes_with_the_same_idempotency_key(service):
    qwen = service.sims["qwen-72b"]
    headers = {"Idempotency-Key": "chat-77-a"}
    with pytest.raises(openai.ConflictError) as exc:
        await sdk(service).chat.completions.create(model="auto", messages=LEGAL, extra_headers=headers)
    body = exc.value.body
    approval_id = body["approval"]["approval_id"]
    assert body["code"] == "approval_required" and approval_id in body["message"]
    assert qwen.seen() == []  # held before any model was called
    # still pending: resending gives the same approval, not a second one
    with pytest.raises(openai.ConflictError) as again:
        await sdk(service).chat.completions.create(model="auto", messages=LEGAL, extra_headers=headers)
    assert again.value.body["approval"]["approval_id"] == approval_id
    await _approve_by_link(service, approval_id)
    raw = await sdk(service).chat.completions.with_raw_response.create(model="auto", messages=LEGAL,
                                                                       extra_headers=headers)
    assert raw.parse().choices[0].message.content.startswith("Simulated answer")
    assert len(qwen.seen()) == 1  # the model was called once, after the approval
    assert [a["id"] for a in await _approvals(service)] == [approval_id]  # no second hold
    # the decision of the resumed request records the approval it resumed
    async with service.client() as c:
        rec = (await c.get(f"/v1/decisions/{raw.headers['x-policyengine-decision-id']}")).json()
    assert rec["record"]["extra"] == {"outcome": "resumed", "approval_id": approval_id}


async def test_held_chat_resumes_by_approval_id_and_a_rejection_is_a_refusal(service):
    with pytest.raises(openai.ConflictError) as exc:
        await sdk(service).chat.completions.create(model="auto", messages=LEGAL)
    approval_id = exc.value.body["approval"]["approval_id"]
    # an approval id is bound to the request it held
    other = [{"role": "user", "content": "Something else entirely, my solicitor says hi."}]
    with pytest.raises(openai.ConflictError) as wrong:
        await sdk(service).chat.completions.create(model="auto", messages=other,
                                                   extra_headers={"X-PolicyEngine-Approval-Id": approval_id})
    assert "different request" in wrong.value.body["message"]
    await _approve_by_link(service, approval_id, decision="reject", reason="legal answers this one")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await sdk(service).chat.completions.create(model="auto", messages=LEGAL,
                                                   extra_headers={"X-PolicyEngine-Approval-Id": approval_id})
    assert refused.value.body["code"] == "approval_rejected"
    assert "legal answers this one" in refused.value.body["message"]
    assert service.sims["qwen-72b"].seen() == []


async def test_a_held_chat_can_wait_for_its_reviewer(service):
    client = sdk(service)
    task = asyncio.create_task(client.chat.completions.create(
        model="auto", messages=LEGAL, extra_headers={"X-PolicyEngine-Hold-Wait": "30"}, timeout=60))
    for _ in range(200):
        pending = [a for a in await _approvals(service) if a["state"] == "pending"]
        if pending:
            break
        await asyncio.sleep(0.05)
    assert not task.done()
    await _approve_by_link(service, pending[0]["id"])
    completion = await asyncio.wait_for(task, 30)
    assert completion.choices[0].message.content.startswith("Simulated answer")


async def test_a_held_stream_keeps_alive_then_streams_the_answer(service):
    auth = {"Authorization": f"Bearer {service.tokens['app']}"}
    body = {"model": "auto", "messages": LEGAL, "stream": True}
    async with (httpx.AsyncClient(base_url=service.url, timeout=60, headers=auth) as c,
                c.stream("POST", "/v1/chat/completions", json=body, headers={"X-PolicyEngine-Hold-Wait": "30"}) as resp):
        assert resp.status_code == 200
        lines = resp.aiter_lines()
        first = await lines.__anext__()
        assert first.startswith(": held for human review: approval apr_")
        approval_id = first.split("approval ")[1].strip()
        await _approve_by_link(service, approval_id)
        rest = [line async for line in lines if line]
    data = [line for line in rest if line.startswith("data: ")]
    assert data[-1] == "data: [DONE]" and any("Simulated" in line for line in data)


async def test_per_rule_chat_modes_review_and_block(service):
    raw = await sdk(service).chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "I am disgusted by the delay on order 12."}])
    completion = raw.parse()
    assert completion.choices[0].message.content  # answered at once...
    assert "under-review" in raw.headers["x-policyengine-tags"]  # ...tagged, with a review case open
    review = completion.model_extra["policyengine"]["review"]
    async with service.client() as c:
        apr = (await c.get(f"/v1/approvals/{review['approval_id']}")).json()
    assert apr["state"] == "pending" and "Simulated answer" in next(iter(apr["answers"].values()))
    with pytest.raises(openai.PermissionDeniedError) as blocked:
        await sdk(service).chat.completions.create(
            model="auto", messages=[{"role": "user", "content": "You idiot, where is my order?"}])
    assert blocked.value.body["code"] == "policy_denied"


async def test_divergent_answers_held_then_released_on_resend(service):
    service.sims["gemma-27b"].answer = "No. The refund was refused on 3 March and you owe us 500 GBP."
    headers = {"X-PolicyEngine-Use-Case": "legal", "Idempotency-Key": "legal-9"}
    msg = [{"role": "user", "content": "Was my refund approved?"}]
    with pytest.raises(openai.ConflictError) as exc:
        await sdk(service).chat.completions.create(model="auto", messages=msg, extra_headers=headers)
    approval = exc.value.body["approval"]
    calls = len(service.sims["qwen-72b"].seen()) + len(service.sims["gemma-27b"].seen())
    await _approve_by_link(service, approval["approval_id"], shows="you owe us 500 GBP")  # both answers shown
    completion = await sdk(service).chat.completions.create(model="auto", messages=msg, extra_headers=headers)
    # the released answer comes from the approval: neither model is asked again
    assert completion.choices[0].message.content.startswith("Simulated answer")
    assert len(service.sims["qwen-72b"].seen()) + len(service.sims["gemma-27b"].seen()) == calls


# ------------------------------------------------------------------ the reviewer's choice of answer

DIVERGENT_B = "No. The refund was refused on 3 March and you owe us 500 GBP."


async def _hold_divergent(service, key: str, question: str = "Was my refund approved?") -> tuple[dict, list, dict]:
    """A legal question whose two answers diverge: held with both answers (A: qwen-72b, B: gemma-27b)."""
    service.sims["gemma-27b"].answer = DIVERGENT_B
    headers = {"X-PolicyEngine-Use-Case": "legal", "Idempotency-Key": key}
    msg = [{"role": "user", "content": question}]
    with pytest.raises(openai.ConflictError) as exc:
        await sdk(service).chat.completions.create(model="auto", messages=msg, extra_headers=headers)
    return exc.value.body["approval"], msg, headers


async def _approve_rest(service, approval_id: str, body: dict) -> httpx.Response:
    async with service.client("reviewer") as c:
        return await c.post(f"/v1/approvals/{approval_id}/approve", json=body)


async def test_rest_approve_with_answer_from_b_releases_b(service):
    approval, msg, headers = await _hold_divergent(service, "legal-choice-b")
    r = await _approve_rest(service, approval["approval_id"], {"answer_from": "gemma-27b", "reason": "B is right"})
    assert r.status_code == 200, r.text
    assert r.json()["answer"] == DIVERGENT_B and r.json()["answer_from"] == "gemma-27b"
    calls = len(service.sims["qwen-72b"].seen()) + len(service.sims["gemma-27b"].seen())
    completion = await sdk(service).chat.completions.create(model="auto", messages=msg, extra_headers=headers)
    assert completion.choices[0].message.content == DIVERGENT_B
    assert completion.model == "gemma-27b"
    assert len(service.sims["qwen-72b"].seen()) + len(service.sims["gemma-27b"].seen()) == calls
    async with service.client("reviewer") as c:
        events = (await c.get(f"/v1/approvals/{approval['approval_id']}/audit")).json()["data"]
    released = next(e for e in events if e["kind"] == "approved")["details"]["released_answer"]
    assert released["from"] == "gemma-27b" and released["chosen"] == "reviewer" and not released["edited"]


async def test_review_page_edited_answer_is_what_the_client_receives(service):
    approval, msg, headers = await _hold_divergent(service, "legal-edit")
    url = service.runtime.approvals.issue_link(approval["approval_id"], "email:rita@acme.example")
    path = urlsplit(url).path
    edit = "Your refund is under review by our legal team <see letter 4>; we will write by Friday."
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as c:
        page = await c.get(path, params={"intent": "approve", "choice": "edit"})
        assert page.status_code == 200
        assert "Was my refund approved?" in page.text and "you owe us 500 GBP" in page.text  # prompt and both
        assert "Simulated answer" in page.text
        assert 'value="edit" id="choice-edit" checked' in page.text  # the link's choice is preselected
        # an edit sent with a model's answer chosen would be lost: refused, and the link still works
        lost = await c.post(path, data={"decision": "approve", "choice": "model:qwen-72b", "answer": edit})
        assert lost.status_code == 422 and "You edited the answer" in lost.text
        assert "&lt;see letter 4&gt;" in lost.text  # the edit is kept, escaped
        done = await c.post(path, data={"decision": "approve", "choice": "edit", "answer": edit.replace(" by ", "\r\nby ")})
        assert done.status_code == 200, done.text
        assert "your edited answer" in done.text
    completion = await sdk(service).chat.completions.create(model="auto", messages=msg, extra_headers=headers)
    assert completion.choices[0].message.content == edit.replace(" by ", "\nby ")  # the browser's CRLF as LF
    async with service.client("reviewer") as c:
        view = (await c.get(f"/v1/approvals/{approval['approval_id']}")).json()
    assert view["answer_from"] is None and view["answer"].startswith("Your refund is under review")


async def test_review_page_choice_of_b_releases_b(service):
    approval, msg, headers = await _hold_divergent(service, "legal-page-b")
    url = service.runtime.approvals.issue_link(approval["approval_id"], "email:rita@acme.example")
    path = urlsplit(url).path
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as c:
        page = await c.get(path)
        first = page.text.split('name="answer"')[1]  # the edit box is prefilled with the first answer
        assert "Simulated answer" in first.split("</textarea>")[0]
        # the form as a browser sends it: B chosen, the edit box left as it was prefilled
        view = await service.runtime.approvals.get(approval["approval_id"])
        done = await c.post(path, data={"decision": "approve", "choice": "model:gemma-27b",
                                        "answer": view.answers["qwen-72b"].replace("\n", "\r\n")})
        assert done.status_code == 200, done.text
    completion = await sdk(service).chat.completions.create(model="auto", messages=msg, extra_headers=headers)
    assert completion.choices[0].message.content == DIVERGENT_B


async def test_a_choice_naming_an_unknown_model_or_without_answers_is_422(service):
    approval, _, _ = await _hold_divergent(service, "legal-unknown")
    r = await _approve_rest(service, approval["approval_id"], {"answer_from": "kimi-large"})
    assert r.status_code == 422 and "kimi-large" in r.json()["error"]["message"] and "gemma-27b" in r.json()["error"]["message"]
    both = await _approve_rest(service, approval["approval_id"], {"answer_from": "gemma-27b", "answer": "x"})
    assert both.status_code == 422
    empty = await _approve_rest(service, approval["approval_id"], {"answer": "   "})
    assert empty.status_code == 422
    too_long = await _approve_rest(service, approval["approval_id"], {"answer": "x" * 20001})
    assert too_long.status_code == 422
    # nothing was decided: the approval is still pending, and the refusals are audited
    async with service.client("reviewer") as c:
        assert (await c.get(f"/v1/approvals/{approval['approval_id']}")).json()["state"] == "pending"
        events = (await c.get(f"/v1/approvals/{approval['approval_id']}/audit")).json()["data"]
    assert any(e["kind"] == "refused" and "kimi-large" in (e["reason"] or "") for e in events)
    # a held chat without answers (a litigation mention, held before any model is called)
    with pytest.raises(openai.ConflictError) as exc:
        await sdk(service).chat.completions.create(model="auto", messages=LEGAL)
    plain = exc.value.body["approval"]["approval_id"]
    r = await _approve_rest(service, plain, {"answer_from": "qwen-72b"})
    assert r.status_code == 422 and "no model answers" in r.json()["error"]["message"]
    r = await _approve_rest(service, plain, {"answer": "an answer nobody asked for"})
    assert r.status_code == 422


async def test_approving_without_a_choice_releases_the_first_and_a_rejection_is_a_refusal(service):
    approval, msg, headers = await _hold_divergent(service, "legal-default")
    r = await _approve_rest(service, approval["approval_id"], {})
    assert r.status_code == 200 and r.json()["answer_from"] == "qwen-72b"
    completion = await sdk(service).chat.completions.create(model="auto", messages=msg, extra_headers=headers)
    assert completion.choices[0].message.content.startswith("Simulated answer")
    rejected, msg2, headers2 = await _hold_divergent(service, "legal-rejected", "Can I sue you over the refund?")
    async with service.client("reviewer") as c:
        r = await c.post(f"/v1/approvals/{rejected['approval_id']}/reject",
                         json={"reason": "neither answer is safe to send"})
    assert r.status_code == 200 and r.json()["answer"] is None
    with pytest.raises(openai.PermissionDeniedError) as refused:
        await sdk(service).chat.completions.create(model="auto", messages=msg2, extra_headers=headers2)
    body = refused.value.body
    assert body["code"] == "approval_rejected" and "neither answer is safe to send" in body["message"]
    assert "not answered" in body["message"]


async def test_a_chat_answered_before_review_offers_no_choice_of_answer(service):
    completion = await sdk(service).chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "I am disgusted by the delay on order 13."}])
    approval_id = completion.model_extra["policyengine"]["review"]["approval_id"]
    async with service.client("reviewer") as c:
        view = (await c.get(f"/v1/approvals/{approval_id}")).json()
    assert view["already_answered"] and view["answers"]
    url = service.runtime.approvals.issue_link(approval_id, "email:rita@acme.example")
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as c:
        page = await c.get(urlsplit(url).path)
    assert "already answered" in page.text and 'name="choice"' not in page.text
    assert "disgusted by the delay" in page.text  # the prompt


async def test_a_streamed_resend_gets_the_chosen_answer(service):
    approval, msg, headers = await _hold_divergent(service, "legal-stream-b")
    assert (await _approve_rest(service, approval["approval_id"], {"answer_from": "gemma-27b"})).status_code == 200
    stream = await sdk(service).chat.completions.create(model="auto", messages=msg, extra_headers=headers, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == DIVERGENT_B
