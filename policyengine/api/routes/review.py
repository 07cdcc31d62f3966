"""The review page: server-rendered, no JavaScript, reached through a signed link.

    GET  /review/{token}   shows the held action (a held chat's prompt), why it was held, model
                           answers side by side, and the approve / reject forms. Decides
                           nothing, so mail scanners and link previews cannot approve.
                           ?intent=approve|reject highlights a form; ?choice=model:<name> or
                           ?choice=edit preselects the answer to release (Teams / email links).
    POST /review/{token}   (urlencoded, at most max_body_bytes: 413 past it)
                           decision=approve|reject, reason (required to reject); for an
                           approval holding answers choice=model:<name> (that answer as it is)
                           or choice=edit with answer=<text> (the reviewer's edit); through a
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
from policyengine.api.http import read_body
from policyengine.api.routes.approvals import service_of
from policyengine.approvals.errors import ApprovalError, ApprovalInvalid, LinkRefused
from policyengine.approvals.models import ApprovalView
from policyengine.approvals.signing import LinkClaims
from policyengine.approvals.states import Via
from policyengine.approvals.views import MAX_ANSWER_CHARS, choose_answer
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


def _choice(view: ApprovalView, choice: str | None) -> str | None:
    """`choice` when it names one of the approval's answers (`model:<name>`) or `edit`, else None."""
    if not view.answers or not choice:
        return None
    if choice == "edit" or (choice.startswith("model:") and choice[6:] in view.answers):
        return choice
    return None


def _review(request: Request, view: ApprovalView, recipient: str, *, status: int = 200, used: bool = False,
            error: str | None = None, intent: str | None = None, choice: str | None = None,
            edit_text: str | None = None) -> HTMLResponse:
    return _page(request, "review.html.j2", status, a=view, recipient=recipient, used=used, error=error,
                 intent=intent if intent in ("approve", "reject") else None, post_url=str(request.url.path),
                 choice=_choice(view, choice), edit_text=edit_text, max_answer=MAX_ANSWER_CHARS)


def _norm(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def _chosen(view: ApprovalView, form: dict[str, str]) -> tuple[str | None, str | None]:
    """The form's choice of answer as (answer_from, answer). Raises `ApprovalInvalid` when the
    reviewer changed the text but chose a model's answer as it is (their edit would be lost)."""
    choice = form.get("choice", "")
    text = form["answer"].replace("\r\n", "\n") if "answer" in form else None
    if choice == "edit":
        return None, text if text is not None else ""
    answer_from = choice[6:] if choice.startswith("model:") else (choice or None)
    if view.answers and text is not None and text.strip() and _norm(text) not in {_norm(t) for t in view.answers.values()}:
        picked = f"the answer of {answer_from}" if answer_from else "the first answer"
        raise ApprovalInvalid(f"You edited the answer but chose to release {picked} as it is: choose \"My edit "
                              "of the answer\" to send your edit, or choose an answer.")
    return answer_from, None


@router.get("/review/{token}")
async def review_page(request: Request, token: str, intent: str | None = Query(None),
                      choice: str | None = Query(None, max_length=300)) -> HTMLResponse:
    svc = service_of(request)
    opened = await _open_link(request, token)
    if isinstance(opened, HTMLResponse):
        return opened
    claims, view = opened
    used = await svc.link_used(claims.nonce)
    if view.state == "pending" and claims.stage != view.escalations:
        return _page(request, "error.html.j2", 410, message="This approval has been escalated since this link was "
                     f"sent; it now needs a reviewer of {', '.join(view.groups)}.")
    return _review(request, view, claims.recipient, used=used, intent=intent, choice=choice)


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
        return _review(request, view, claims.recipient, status=422, error="A reason is required to reject.",
                       intent="reject")
    answer_from = answer = None
    if decision == "approve" and ("choice" in form or "answer" in form):
        try:
            answer_from, answer = _chosen(view, form)
            choose_answer(view.answers, answer_from, answer)  # refused here keeps the link usable
        except ApprovalInvalid as exc:
            return _review(request, view, claims.recipient, status=422, error=exc.message, intent="approve",
                           choice=form.get("choice"), edit_text=form.get("answer"))
    try:
        decided = await svc.decide_with_link(
            token, approve=decision == "approve", reason=reason, via=_via(claims.recipient),
            ip=request.client.host if request.client else None, user_agent=request.headers.get("user-agent"),
            reviewer=reviewer or None, reviewer_signature=reviewer_signature or None,
            answer_from=answer_from, answer=answer,
        )
    except ApprovalError as exc:
        return _page(request, "error.html.j2", exc.status_code, message=exc.message)
    return _page(request, "done.html.j2", a=decided)
