"""The review page: server-rendered, no JavaScript, reached through a signed link.

    GET  /review/{token}   shows the held action, why it was held, model answers side
                           by side, and the approve / reject forms. Decides nothing, so
                           mail scanners and link previews cannot approve.
    POST /review/{token}   (urlencoded, at most max_body_bytes: 413 past it)
                           decision=approve|reject, reason (required to reject); through a
                           webhook link also reviewer=<identity> and reviewer_signature
                           (see `policyengine.approvals.signing.sign_reviewer`).

The signed token in the URL is the credential and the CSRF defence: a forged
cross-site POST would need it. Links expire and work once (nonce recorded).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from starlette.responses import HTMLResponse

from policyengine.api.errors import ApiError
from policyengine.api.routes.approvals import read_body, service_of
from policyengine.approvals.errors import ApprovalError, LinkRefused
from policyengine.approvals.models import ApprovalView
from policyengine.approvals.signing import LinkClaims
from policyengine.approvals.states import Via
from policyengine.notifier.render import TemplateRenderer

router = APIRouter(tags=["review"], include_in_schema=False)

HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}


@lru_cache(maxsize=4)
def _renderer(override: str | None) -> TemplateRenderer:
    return TemplateRenderer(Path(override) if override else None, package="policyengine.approvals")


def _page(request: Request, name: str, status: int = 200, **ctx: object) -> HTMLResponse:
    svc = service_of(request)
    override = svc.settings.templates_dir
    html = _renderer(str(override) if override else None).render(name, **ctx)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _via(recipient: str) -> Via:
    kind = recipient.split(":", 1)[0]
    return {"email": Via.email, "teams": Via.teams, "slack": Via.slack, "webhook": Via.webhook}.get(kind, Via.review_page)


async def _open_link(request: Request, token: str) -> tuple[LinkClaims, ApprovalView] | HTMLResponse:
    """The link's claims and approval view, or the error page to answer with."""
    try:
        return await service_of(request).open_link(token)
    except LinkRefused as exc:
        return _page(request, "error.html.j2", 410, message=exc.message)
    except ApprovalError as exc:
        return _page(request, "error.html.j2", exc.status_code, message=exc.message)


@router.get("/review/{token}")
async def review_page(request: Request, token: str, intent: str | None = Query(None)) -> HTMLResponse:
    svc = service_of(request)
    opened = await _open_link(request, token)
    if isinstance(opened, HTMLResponse):
        return opened
    claims, view = opened
    used = await svc.link_used(claims.nonce)
    if view.state == "pending" and claims.stage != view.escalations:
        return _page(request, "error.html.j2", 410, message="This approval has been escalated since this link was "
                     f"sent; it now needs a reviewer of {', '.join(view.groups)}.")
    return _page(request, "review.html.j2", a=view, recipient=claims.recipient, used=used, error=None,
                 intent=intent if intent in ("approve", "reject") else None, post_url=str(request.url.path))


async def _form(request: Request) -> dict[str, str]:
    """The POSTed form (urlencoded), read with a running size count against `max_body_bytes`
    (`ApiError` 413 past it); the first value of each name."""
    raw = await read_body(request)
    try:
        parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in parsed.items() if v}


@router.post("/review/{token}")
async def review_decide(request: Request, token: str) -> HTMLResponse:
    svc = service_of(request)
    try:
        form = await _form(request)
    except ApiError as exc:
        return _page(request, "error.html.j2", exc.status, message=exc.message)
    decision, reason = form.get("decision", ""), form.get("reason", "")
    reviewer, reviewer_signature = form.get("reviewer", ""), form.get("reviewer_signature", "")
    if decision not in ("approve", "reject"):
        return _page(request, "error.html.j2", 422, message="decision must be approve or reject")
    opened = await _open_link(request, token)
    if isinstance(opened, HTMLResponse):
        return opened
    claims, view = opened
    if decision == "reject" and not reason.strip():
        return _page(request, "review.html.j2", 422, a=view, recipient=claims.recipient, used=False,
                     error="A reason is required to reject.", intent="reject", post_url=str(request.url.path))
    try:
        decided = await svc.decide_with_link(
            token, approve=decision == "approve", reason=reason, via=_via(claims.recipient),
            ip=request.client.host if request.client else None, user_agent=request.headers.get("user-agent"),
            reviewer=reviewer or None, reviewer_signature=reviewer_signature or None,
        )
    except ApprovalError as exc:
        return _page(request, "error.html.j2", exc.status_code, message=exc.message)
    return _page(request, "done.html.j2", a=decided)
