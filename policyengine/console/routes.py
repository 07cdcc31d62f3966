"""The console's pages (see the package docstring). Every handler reads the session first.

    GET  /console                       -> the decisions page (or the login page)
    GET  /console/login                 the login form (an API key, posted, never in a URL)
    POST /console/login                 key -> session cookie; POST /console/logout ends it
    GET  /console/decisions             search (effect, model, action, actor, kind, since, until) + chart
    GET  /console/decisions/{id}        one decision: explanation, attempts, rules, action
    GET  /console/approvals             the approvals this reviewer may decide (?state=pending|all|...)
    GET  /console/approvals/{id}        one approval: action, reasons, answers, audit trail, forms
    POST /console/approvals/{id}        approve (optionally an edited action / a chosen answer) or reject
    GET  /console/usage                 the tenant's limit and budget counters now, and their chart
    GET  /console/fleet                 (admin) models, deployments, cooldowns, breakers; latency and
                                        failover charts from the tenant's log
    POST /console/fleet/cooldowns/clear (admin) clear one cooldown (`scope`); .../breakers/reset closes
                                        one breaker (`state_id`), as POST /v1/fleet/...

A page asked for without a session leads to the login page and, once logged in, back to it
(`next`: console paths only). Every POST needs the session's CSRF token and this origin.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Request
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from policyengine.api.errors import ApiError
from policyengine.api.routes.decisions import SEQ_MAX, _check_text, _time, decision_detail
from policyengine.approvals.errors import ApprovalError
from policyengine.approvals.models import Reviewer
from policyengine.approvals.service import SELF_APPROVAL
from policyengine.approvals.states import State, Via
from policyengine.console import charts, queries, session
from policyengine.console.throttle import LoginThrottle
from policyengine.dispatch.explain import describe, outcome, why
from policyengine.gateway.errors import LimitsUnavailable
from policyengine.gateway.fleet import FleetError, clear_cooldown, fleet_status, reset_breaker
from policyengine.gateway.limits import usage_report
from policyengine.store import DecisionQuery, decision_view

log = logging.getLogger("policyengine.console")

router = APIRouter(prefix="/console", include_in_schema=False)

HEADERS = {
    # no script at all; pygal's SVG carries <style> elements, hence style-src 'unsafe-inline'
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
PAGE = 50
MAX_FORM_BYTES = 256 * 1024


@lru_cache(maxsize=1)
def _env() -> Environment:
    env = Environment(loader=PackageLoader("policyengine.console", "templates"),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True, lstrip_blocks=True)
    env.filters["ts"] = lambda t: (datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                                   if isinstance(t, int | float) else (t.strftime("%Y-%m-%d %H:%M:%S UTC")
                                                                       if isinstance(t, datetime) else (t or "-")))
    env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    env.filters["why"] = why
    env.filters["outcome"] = outcome
    env.filters["describe"] = describe
    env.filters["basename"] = lambda p: str(p).replace("\\", "/").rsplit("/", 1)[-1]
    return env


def _page(name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
    html = _env().get_template(name).render(**ctx)
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _rt(request: Request) -> Any:
    return request.app.state.runtime


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def _session(request: Request) -> session.Session | None:
    try:
        return await session.read(_rt(request), request.cookies.get(session.COOKIE))
    except session.ConsoleUnavailable:
        return None


def _next_page(value: str | None) -> str:
    """Where to go after logging in: a console page path (never another site), else the decisions."""
    if value and value.startswith("/console/") and "//" not in value and "\\" not in value and ".." not in value \
            and "%" not in value.split("?", 1)[0] and not value.startswith("/console/log") \
            and all(31 < ord(c) < 127 for c in value):
        return value
    return "/console/decisions"


def _to_login(request: Request) -> RedirectResponse:
    """To the login page; a GET of a console page comes back to it after logging in."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = "/console/login"
    if request.method == "GET" and _next_page(here) == here:
        target += "?" + urlencode({"next": here})
    return RedirectResponse(target, status_code=303, headers=HEADERS)


def _same_origin(request: Request) -> bool:
    """A POST must come from a page of this service: its Origin (or, lacking one, Referer) names this host.
    With neither header (old clients, curl) the CSRF token alone decides."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True
    if origin == "null":
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.netloc == request.url.netloc


async def _form(request: Request) -> dict[str, str]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_FORM_BYTES:
            raise ApiError(413, f"form larger than {MAX_FORM_BYTES} bytes", code="body_too_large")
    try:
        parsed = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        return {}
    return {k: v[0] for k, v in parsed.items() if v}


def _ctx(s: session.Session, active: str, **kw: Any) -> dict[str, Any]:
    p = s.principal
    return {"me": p, "csrf": s.csrf, "active": active, "is_admin": "admin" in p.roles, **kw}


def _error(s: session.Session | None, status: int, message: str, active: str = "") -> HTMLResponse:
    if s is None:
        return _page("error.html.j2", status, me=None, message=message, active=active)
    return _page("error.html.j2", status, message=message, **_ctx(s, active))


# ------------------------------------------------------------------------------ login


@router.get("")
async def index(request: Request) -> Response:
    return RedirectResponse("/console/decisions" if await _session(request) else "/console/login", status_code=303,
                            headers=HEADERS)


@router.get("/login")
async def login_page(request: Request) -> Response:
    nxt = _next_page(request.query_params.get("next"))
    if await _session(request):
        return RedirectResponse(nxt, status_code=303, headers=HEADERS)
    return _page("login.html.j2", me=None, error=None, next=nxt)


def _throttle(request: Request) -> LoginThrottle:
    """This app's login throttle (one per app: its settings' rate and Redis)."""
    t = getattr(request.app.state, "console_throttle", None)
    if t is None:
        s = _rt(request).settings
        t = request.app.state.console_throttle = LoginThrottle(s.console_login_failures, s.redis_url, s.redis_prefix)
    return t


@router.post("/login")
async def login(request: Request) -> Response:
    rt = _rt(request)
    if not _same_origin(request):
        return _page("login.html.j2", 403, me=None, error="This form must be sent from this console's own page.")
    try:
        form = await _form(request)
    except ApiError as exc:
        return _page("login.html.j2", exc.status, me=None, error=exc.message)
    key = (form.get("key") or "").strip()
    nxt = _next_page(form.get("next"))
    address = request.client.host if request.client else "-"
    verdict = await _throttle(request).check(address)
    if not verdict.allowed:
        log.warning("console: login throttled for %s (too many failed logins)", address)
        page = _page("login.html.j2", 429, me=None, next=nxt,
                     error=f"Too many failed logins from this address: try again in {verdict.retry_after_s} s.")
        page.headers["Retry-After"] = str(verdict.retry_after_s)
        return page
    if rt.settings.auth_disabled:
        from policyengine.api.http import authenticate

        principal = await authenticate(request)
    else:
        principal = await rt.key_cache.lookup(key) if key else None
    if principal is None:
        await _throttle(request).failed(address)
        log.warning("console: refused login from %s (unknown or revoked key)", address)
        return _page("login.html.j2", 401, me=None, next=nxt, error="That key is not valid (unknown or revoked).")
    if not principal.has(*session.CONSOLE_ROLES):
        return _page("login.html.j2", 403, me=None, next=nxt,
                     error="The console is for reviewers and admins: this key has neither role.")
    try:
        cookie = session.issue(rt, principal)
    except session.ConsoleUnavailable as exc:
        return _page("login.html.j2", 503, me=None, error=str(exc))
    resp = RedirectResponse(nxt, status_code=303, headers=HEADERS)
    resp.set_cookie(session.COOKIE, cookie, max_age=session.MAX_AGE_S, httponly=True, samesite="strict",
                    secure=_secure(request), path="/console")
    log.info("console: %s (tenant %s) logged in", principal.subject, principal.tenant)
    return resp


@router.post("/logout")
async def logout(request: Request) -> Response:
    s = await _session(request)
    try:
        form = await _form(request)
    except ApiError:
        form = {}
    if s is not None and not session.csrf_ok(s, form.get("csrf")):
        return _error(s, 403, "The form's CSRF token is missing or wrong: reload the page and try again.")
    resp = RedirectResponse("/console/login", status_code=303, headers=HEADERS)
    resp.delete_cookie(session.COOKIE, path="/console", httponly=True, samesite="strict", secure=_secure(request))
    return resp


# ------------------------------------------------------------------------------ decisions


FILTERS = ("effect", "model", "action", "actor", "kind", "since", "until")


@router.get("/decisions")
async def decisions(request: Request) -> Response:
    s = await _session(request)
    if s is None:
        return _to_login(request)
    rt, tenant = _rt(request), s.principal.tenant
    q = {k: (request.query_params.get(k) or "").strip() or None for k in FILTERS}
    before_raw = request.query_params.get("before")
    try:
        if q["effect"] is not None and q["effect"] not in queries.EFFECTS:
            raise ApiError(422, f"effect must be one of {', '.join(queries.EFFECTS)}", code="invalid_request")
        for name in ("model", "action", "actor", "kind"):
            _check_text(q[name], name)
        since, until = _time(q["since"], "since"), _time(q["until"], "until")
        before = int(before_raw) if before_raw else None
        if before is not None and not 0 <= before <= SEQ_MAX:
            raise ValueError
    except ApiError as exc:
        return _page("decisions.html.j2", 422, error=exc.message, rows=[], q=q, chart=None, next_url=None,
                     effects=queries.EFFECTS, **_ctx(s, "decisions"))
    except ValueError:
        return _page("decisions.html.j2", 422, error="before must be a decision sequence number", rows=[], q=q,
                     chart=None, next_url=None, effects=queries.EFFECTS, **_ctx(s, "decisions"))
    rows = await rt.decisions.query(DecisionQuery(
        tenant=tenant, action=q["action"], effect=q["effect"], actor=q["actor"], model=q["model"], kind=q["kind"],
        since=since, until=until, before_seq=before, limit=PAGE))
    data = [decision_view(r, full=False) for r in rows]
    next_url = None
    if len(data) == PAGE:
        next_url = "/console/decisions?" + urlencode({**{k: v for k, v in q.items() if v}, "before": data[-1]["seq"]})
    # the chart: the same filters (no cursor), at most queries.MAX_ROWS rows
    chart_rows = await rt.decisions.query(DecisionQuery(
        tenant=tenant, action=q["action"], effect=q["effect"], actor=q["actor"], model=q["model"], kind=q["kind"],
        since=since, until=until, limit=queries.MAX_ROWS))
    buckets = queries.effects_over_time(chart_rows, now=until or time.time(), start=since)
    chart = charts.effects_chart(buckets) if buckets.total else None
    return _page("decisions.html.j2", rows=data, q=q, chart=chart, buckets=buckets, next_url=next_url, error=None,
                 effects=queries.EFFECTS, max_rows=queries.MAX_ROWS, **_ctx(s, "decisions"))


@router.get("/decisions/{decision_id}")
async def decision_page(request: Request, decision_id: str) -> Response:
    s = await _session(request)
    if s is None:
        return _to_login(request)
    d = await decision_detail(_rt(request), s.principal.tenant, decision_id)
    if d is None:
        return _error(s, 404, f"No decision {decision_id!r} in tenant {s.principal.tenant!r}.", "decisions")
    rec = d["merged"]
    extra = rec.get("extra") or {}
    approval_id = extra.get("approval_id") or (extra.get("approval") or {}).get("approval_id")
    svc = _rt(request).approvals
    if approval_id is None and svc is not None and d.get("effect") in ("require_approval", "escalate"):
        found = await svc.for_decision(s.principal.tenant, decision_id)  # an evaluate's hold: the row names it
        approval_id = found.id if found is not None else None
    return _page("decision.html.j2", d=d, rec=rec, attempts=rec.get("attempts") or [], approval_id=approval_id,
                 **_ctx(s, "decisions"))


# ------------------------------------------------------------------------------ approvals


def _reviewer(s: session.Session, request: Request) -> Reviewer:
    r = Reviewer.from_principal(s.principal, ip=request.client.host if request.client else None,
                                user_agent=request.headers.get("user-agent"))
    return dataclasses.replace(r, via=Via.console.value)


@router.get("/approvals")
async def approvals(request: Request) -> Response:
    s = await _session(request)
    if s is None:
        return _to_login(request)
    svc = _rt(request).approvals
    if svc is None:
        return _error(s, 503, "The approvals service is not running.", "approvals")
    state = request.query_params.get("state") or "pending"
    if state not in ("all", *State.__members__):
        return _error(s, 422, f"state must be one of {', '.join(State.__members__)} or all", "approvals")
    views = await svc.list_for(_reviewer(s, request), state=None if state == "all" else State(state), limit=200)
    return _page("approvals.html.j2", views=views, state=state, states=["pending", "approved", "rejected", "expired",
                                                                       "cancelled", "all"], **_ctx(s, "approvals"))


async def _approval_page(request: Request, s: session.Session, approval_id: str, *, status: int = 200,
                         error: str | None = None, form: dict[str, str] | None = None) -> HTMLResponse:
    svc = _rt(request).approvals
    reviewer = _reviewer(s, request)
    try:
        view = await svc.get(approval_id, tenant=s.principal.tenant)
        refusal = await svc.refusal_for(approval_id, reviewer)
    except ApprovalError as exc:
        return _error(s, exc.status_code, exc.message, "approvals")
    audit = await svc.audit_trail(approval_id)
    fields = (view.action or {}).get("fields") or {}
    return _page("approval.html.j2", status, a=view, audit=audit, error=error, refusal=refusal,
                 self_approval=refusal == SELF_APPROVAL,
                 fields_json=(form or {}).get("fields") or json.dumps(fields, indent=2, ensure_ascii=False, default=str),
                 form=form or {}, **_ctx(s, "approvals"))


@router.get("/approvals/{approval_id}")
async def approval_page(request: Request, approval_id: str) -> Response:
    s = await _session(request)
    if s is None:
        return _to_login(request)
    if _rt(request).approvals is None:
        return _error(s, 503, "The approvals service is not running.", "approvals")
    return await _approval_page(request, s, approval_id)


@router.post("/approvals/{approval_id}")
async def approval_decide(request: Request, approval_id: str) -> Response:
    s = await _session(request)
    if s is None:
        return _to_login(request)
    svc = _rt(request).approvals
    if svc is None:
        return _error(s, 503, "The approvals service is not running.", "approvals")
    try:
        form = await _form(request)
    except ApiError as exc:
        return _error(s, exc.status, exc.message, "approvals")
    if not _same_origin(request) or not session.csrf_ok(s, form.get("csrf")):
        return _error(s, 403, "The form's CSRF token is missing or wrong: reload the page and try again.", "approvals")
    decision = form.get("decision")
    if decision not in ("approve", "reject"):
        return await _approval_page(request, s, approval_id, status=422, error="decision must be approve or reject",
                                    form=form)
    reason = form.get("reason") or None
    edited = answer_from = answer = None
    try:
        if decision == "approve":
            view = await svc.get(approval_id, tenant=s.principal.tenant)
            raw = (form.get("fields") or "").strip()
            if raw:
                try:
                    new_fields = json.loads(raw)
                except json.JSONDecodeError as exc:
                    return await _approval_page(request, s, approval_id, status=422, form=form,
                                                error=f"The edited fields are not valid JSON: {exc}")
                if not isinstance(new_fields, dict):
                    return await _approval_page(request, s, approval_id, status=422, form=form,
                                                error="The edited fields must be a JSON object.")
                if new_fields != ((view.action or {}).get("fields") or {}):
                    edited = {"fields": new_fields}
            choice = form.get("choice") or ""
            if choice.startswith("model:"):
                answer_from = choice[6:]
            elif choice == "edit":
                answer = form.get("answer") or ""
        decided = await svc.decide(approval_id, _reviewer(s, request), approve=decision == "approve", reason=reason,
                                   edited_action=edited, answer_from=answer_from, answer=answer)
    except ApprovalError as exc:  # self-approval, another group, already decided, an edit the policy denies...
        return await _approval_page(request, s, approval_id, status=exc.status_code, error=exc.message, form=form)
    log.info("console: approval %s %s by %s", approval_id, decided.state, s.principal.subject)
    return RedirectResponse(f"/console/approvals/{approval_id}", status_code=303, headers=HEADERS)


# ------------------------------------------------------------------------------ usage


@router.get("/usage")
async def usage(request: Request) -> Response:
    """The session tenant's live limit and budget counters (`GET /v1/usage`'s figures) and their chart."""
    s = await _session(request)
    if s is None:
        return _to_login(request)
    rt = _rt(request)
    try:
        report = await usage_report(rt, s.principal.tenant)
    except LimitsUnavailable as exc:
        return _page("usage.html.j2", 503, counters=[], chart=None, error=exc.message, has_limits=True,
                     **_ctx(s, "usage"))
    counters = sorted(report.get("counters") or [], key=lambda c: -float(c.get("percent") or 0))
    policy = rt.policies.current
    has_limits = bool(getattr(policy, "limits", None))
    return _page("usage.html.j2", counters=counters, chart=charts.usage_chart(counters) if counters else None,
                 error=None, has_limits=has_limits, **_ctx(s, "usage"))


# ------------------------------------------------------------------------------ fleet


FLEET_ONLY = "The fleet page is for admins (it shows every model's endpoint and state)."


async def _fleet_page(request: Request, s: session.Session, *, status: int = 200, error: str | None = None,
                      notice: str | None = None) -> HTMLResponse:
    rt = _rt(request)
    data = await fleet_status(rt)
    rows = await queries.recent_rows(rt, s.principal.tenant, kind="chat_outcome")
    rows += await queries.recent_rows(rt, s.principal.tenant, kind="chat_verdict", limit=500)
    stats = queries.model_stats(rows)
    return _page("fleet.html.j2", status, fleet=data, stats=stats, rows_read=len(rows), error=error, notice=notice,
                 latency_chart=charts.latency_chart(stats) if stats else None,
                 failover_chart=charts.failovers_chart(stats) if stats else None, **_ctx(s, "fleet"))


@router.get("/fleet")
async def fleet(request: Request) -> Response:
    s = await _session(request)
    if s is None:
        return _to_login(request)
    if "admin" not in s.principal.roles:
        return _error(s, 403, FLEET_ONLY, "fleet")
    return await _fleet_page(request, s)


@router.post("/fleet/{lever}/{verb}")
async def fleet_lever(request: Request, lever: str, verb: str) -> Response:
    """Clear a cooldown (`cooldowns/clear`, form field `scope`) or close a breaker (`breakers/reset`,
    `state_id`): admin only, CSRF token and same origin required, as `POST /v1/fleet/...`."""
    s = await _session(request)
    if s is None:
        return _to_login(request)
    if "admin" not in s.principal.roles:
        return _error(s, 403, FLEET_ONLY, "fleet")
    if (lever, verb) not in (("cooldowns", "clear"), ("breakers", "reset")):
        return _error(s, 404, "No such fleet action.", "fleet")
    try:
        form = await _form(request)
    except ApiError as exc:
        return _error(s, exc.status, exc.message, "fleet")
    if not _same_origin(request) or not session.csrf_ok(s, form.get("csrf")):
        return _error(s, 403, "The form's CSRF token is missing or wrong: reload the page and try again.", "fleet")
    rt = _rt(request)
    try:
        if lever == "cooldowns":
            out = await clear_cooldown(rt, form.get("scope") or "")
            notice = f"Cooldown {out['scope']} cleared." if out["cleared"] else f"{out['scope']} was not cooling down."
        else:
            out = await reset_breaker(rt, form.get("state_id") or "")
            notice = f"Breaker of {out['state_id']} closed (was {out['was']})."
    except FleetError as exc:
        return await _fleet_page(request, s, status=404, error=str(exc))
    log.warning("console: %s by %s (tenant %s): %s", f"{lever}/{verb}", s.principal.subject, s.principal.tenant, notice)
    return await _fleet_page(request, s, notice=notice)
