"""The console's rules over plain HTTP (no browser): CSRF and origin checks on every POST, keys never
in URLs, a revoked key ends its sessions, tenant isolation, the page headers (CSP without script)."""

from __future__ import annotations

import httpx
import pytest

from console.conftest import console_client, csrf_of

pytestmark = pytest.mark.timeout(60)


async def test_csrf_origin_revocation_and_headers(service):
    async with service.client() as c:
        held = (await c.post("/v1/evaluate", json={"action": "refund", "fields": {"amount": "500 GBP"}})).json()
    apr = held["approval"]["approval_id"]
    async with console_client(service, "reviewer") as h:
        page = await h.get(f"/console/approvals/{apr}")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src" not in csp and "default-src 'none'" in csp and "<script" not in page.text
        token = csrf_of(page.text)
        # no token, a wrong one, or a form from another origin: refused, nothing decided
        for data, headers in (({"decision": "approve"}, {}), ({"decision": "approve", "csrf": "x" * 32}, {}),
                              ({"decision": "approve", "csrf": token}, {"origin": "https://evil.example"})):
            r = await h.post(f"/console/approvals/{apr}", data=data, headers=headers)
            assert r.status_code == 403 and "CSRF" in r.text
        assert (await service.runtime.approvals.get(apr)).state.value == "pending"
        # another tenant's decision or approval is not found
        async with service.client("other") as c:
            other = (await c.post("/v1/evaluate", json={"action": "classify_ticket"})).json()["decision_id"]
        assert (await h.get(f"/console/decisions/{other}")).status_code == 404
        r = await h.post(f"/console/approvals/{apr}", data={"decision": "reject", "csrf": token})
        assert r.status_code == 422 and "reason is required" in r.text
        r = await h.post(f"/console/approvals/{apr}", data={"decision": "reject", "csrf": token, "reason": "too much"})
        assert r.status_code == 303
        assert (await service.runtime.approvals.get(apr)).state.value == "rejected"
        r = await h.post(f"/console/approvals/{apr}", data={"decision": "approve", "csrf": token})
        assert r.status_code == 409 and "already rejected" in r.text
        # the cookie holds no key; revoking the key ends the session at once
        assert service.tokens["reviewer"] not in str(h.cookies.jar)
        info = next(k for k in await service.runtime.keys.list("acme") if k.subject == "rita@acme")
        await service.runtime.keys.revoke(info.key_id)
        r = await h.get("/console/decisions")
        assert r.status_code == 303 and r.headers["location"] == "/console/login?next=%2Fconsole%2Fdecisions"
    async with httpx.AsyncClient(base_url=service.url) as h:
        # a key in the query string does not log in; a forged cookie is no session
        r = await h.get("/console/login", params={"key": service.tokens["admin"]})
        assert "pe_console" not in r.headers.get("set-cookie", "")
        for bad in ("https://evil.example/", "//evil.example/console/", "/console/../v1/fleet", "/elsewhere"):
            r = await h.post("/console/login", data={"key": service.tokens["reviewer"].replace("pe", "px"),
                                                     "next": bad})
            assert r.status_code == 401 and 'name="next" value="/console/decisions"' in r.text
        h.cookies.set("pe_console", "eyJrIjoiZGV2In0.forged.sig")
        assert (await h.get("/console/decisions", follow_redirects=False)).status_code == 303


async def test_group_scope_and_self_approval_refused_on_post(service):
    async with service.client() as c:
        care = (await c.post("/v1/evaluate", json={"action": "draft_response", "text": "I am disgusted"})).json()
    async with service.client("admin") as c:
        own = (await c.post("/v1/evaluate", json={"action": "send_email", "fields": {"to": "x"}})).json()
    async with service.client() as c:
        refund = (await c.post("/v1/evaluate", json={"action": "refund", "fields": {"amount": "500 GBP"}})).json()
    async with console_client(service, "reviewer") as h:  # rita: group refunds, not care
        apr = refund["approval"]["approval_id"]
        token = csrf_of((await h.get(f"/console/approvals/{apr}")).text)
        for fields, status, says in (("{not json", 422, "not valid JSON"), ("[1, 2]", 422, "a JSON object"),
                                     # evaluated again: this policy authorizes no refund it does not hold
                                     ('{"amount": "90 GBP"}', 422, "denied by the policy")):
            r = await h.post(f"/console/approvals/{apr}", data={"decision": "approve", "csrf": token, "fields": fields})
            assert r.status_code == status and says in r.text, r.text[-500:]
        r = await h.post(f"/console/approvals/{apr}", data={"decision": "approve", "csrf": token,
                                                            "fields": '{"amount": "300 GBP"}', "reason": "partial"})
        assert r.status_code == 303
        view = await service.runtime.approvals.get(apr)
        assert view.state.value == "approved" and view.edited and view.action["fields"] == {"amount": "300 GBP"}
        kinds = [e.kind for e in await service.runtime.approvals.audit_trail(apr)]
        assert kinds[-2:] == ["edited", "approved"]  # the edit was evaluated again and recorded

        page = await h.get(f"/console/approvals/{care['approval']['approval_id']}")
        token = csrf_of(page.text)
        r = await h.post(f"/console/approvals/{care['approval']['approval_id']}",
                         data={"decision": "approve", "csrf": token})
        assert r.status_code == 403 and "group care" in r.text
    async with console_client(service, "admin") as h:
        apr = own["approval"]["approval_id"]
        token = csrf_of((await h.get(f"/console/approvals/{apr}")).text)
        r = await h.post(f"/console/approvals/{apr}", data={"decision": "approve", "csrf": token})
        assert r.status_code == 403 and "own action" in r.text
        # the refusals are audited
        kinds = [e.kind for e in await service.runtime.approvals.audit_trail(apr)]
        assert "refused" in kinds or any("refus" in k for k in kinds)
    assert (await service.runtime.approvals.get(apr)).state.value == "pending"
