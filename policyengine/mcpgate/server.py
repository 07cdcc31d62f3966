"""The gateway's MCP server (the official SDK's low-level `Server`): tools/list and tools/call.

- **tools/list**: every connected upstream's tools, less those the caller may never use
  (`CompiledPolicy.never_allowed` on the tool's action before any argument is known: a tool
  the default deny or an unconditional deny covers, or one a caller-only condition denies,
  such as `deny refund when user.role == "intern"`).
- **tools/call**: the call is an Action (`policyengine.mcpgate.decide`), decided and its
  decision row queued before anything else happens (`kind=mcp_tool_call`), and committed
  before any answer: a refusal or a hold waits for the commit first; a forward is sent while
  the row commits (the commit order of `policyengine.gateway`; `commit_before_forward` says
  when it waits first: by default for every tool not declared read-only) and its answer is
  withheld, with a -32603 error, if the row cannot commit; then
  - allow: forwarded to its upstream; the upstream's result is the answer;
  - deny: an error result with the reason (`policyengine.mcpgate.results`);
  - require_approval / escalate: if every held rule says `confirm by user` and the client can
    ask its user (form elicitation), the user is asked (a standalone `elicitation/create` on
    handshake-era connections; an `InputRequiredResult` round on 2026-07-28 connections, with a
    signed `requestState`); otherwise an approval is created (reviewers are notified through
    the approvals outbox: Slack, Teams, email, webhook) and the call waits for it up to
    `hold_wait_s`, sending a progress notification every `progress_every_s` when the client
    sent a progress token. Approved -> forwarded; rejected, expired or cancelled -> an error
    result; still pending -> an error result naming the approval, which the client resumes by
    calling the same tool with the same arguments and `_meta["policyengine/approval_id"]` (or
    the argument `policyengine_approval_id`, removed before forwarding). An approval releases
    one call: a second resume with it is refused.
- Every call's outcome (forwarded with the upstream's status ok / error, unavailable, denied,
  pending, refused, confirmed by the user) is the follow-up row `kind=mcp_outcome` of its
  decision (`follows` = the decision id), with the approval id when there is one.

A broken upstream is an error result for the calls that need it; the other upstreams keep
serving. Malformed JSON-RPC is answered by the SDK's transport with a JSON-RPC error
(parse error / invalid request) on that connection only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from itsdangerous import BadSignature, URLSafeTimedSerializer
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.shared.exceptions import MCPError
from mcp_types.version import is_version_at_least

from policyengine.approvals.errors import ApprovalError
from policyengine.approvals.hashing import action_hash
from policyengine.gateway import (
    HELD,
    Call,
    DecisionLogUnavailable,
    GatewayError,
    PendingCommit,
    hold,
    open_call,
    reasons,
)
from policyengine.gateway.held import Held, find, wait
from policyengine.gateway.runtime import Runtime
from policyengine.mcpgate.config import McpSettings
from policyengine.mcpgate.decide import (
    APPROVAL_ARG,
    APPROVAL_META,
    ArgumentsRefused,
    probe_action,
    tool_action,
)
from policyengine.mcpgate.results import refusal
from policyengine.mcpgate.upstreams import Route, Upstreams, UpstreamUnavailable
from policyengine.types import Action, Decision, Principal, RuleHit

__all__ = ["CONFIRM_KEY", "DECISION_META", "HANDED_OVER", "KIND", "OUTCOME_KIND", "McpGateway", "Prepared"]

log = logging.getLogger("policyengine.mcp")

KIND = "mcp_tool_call"
OUTCOME_KIND = "mcp_outcome"
DECISION_META = "policyengine/decision_id"  # in a forwarded result's _meta: the decision's id
CONFIRM_KEY = "policyengine_confirm"  # the input request key of the user's confirmation
HANDED_OVER = "pe.mcp.prepared"  # ASGI scope key: a call the fast path decided, for the SDK's path to finish
_MODERN = "2026-07-28"  # from here on, tools/call carries elicitation in an InputRequiredResult
_USED_TTL_S = 90 * 86400
_CONFIRM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"confirm": {"type": "boolean", "title": "Run this tool call",
                               "description": "true to run it now; false to refuse it"}},
    "required": ["confirm"],
}


@dataclass(slots=True)
class Prepared:
    """A tools/call decided: what is left is to record it (if not yet) and act on it.

    `route` is None when the tool's upstream is down; `args` are what would be forwarded.
    `commit` is the decision row's commit once `record()` has queued it (None before: a call
    the fast path sends first records its row once the request is written, `forward_wire`);
    `confirm()` records it if need be and awaits it (once)."""

    call: Call
    route: Route | None
    server: str
    tool: str
    args: dict[str, Any]
    extra: dict[str, Any]
    commit: PendingCommit | None = None
    confirmed: bool = False
    failed: DecisionLogUnavailable | None = None

    def record(self) -> None:
        """Queue the decision row (once; with the direct lane it is committed before this
        returns). Never raises: a log that cannot take it is kept in `failed`, for `confirm()`."""
        if self.commit is None and self.failed is None:
            try:
                self.commit = self.call.record(extra=self.extra)
            except DecisionLogUnavailable as exc:
                self.failed = exc

    async def confirm(self) -> None:
        """Return once the decision row is committed; raises MCPError(INTERNAL_ERROR) when it cannot be."""
        if self.confirmed:
            return
        self.record()
        try:
            if self.failed is not None:
                raise self.failed
            assert self.commit is not None
            await self.commit
        except DecisionLogUnavailable as exc:
            raise MCPError(types.INTERNAL_ERROR, getattr(exc, "message", None) or str(exc))
        self.confirmed = True


class McpGateway:
    """One gateway: the runtime it decides with, the upstreams, and the MCP server in front.

    `stdio_principal` is who a stdio client is (there is no HTTP request to authenticate);
    HTTP requests carry theirs in the ASGI scope (`pe.principal`, set by
    `policyengine.mcpgate.http`)."""

    def __init__(self, runtime: Runtime, settings: McpSettings, *, stdio_principal: Principal | None = None) -> None:
        self.rt, self.settings = runtime, settings
        self.upstreams = Upstreams(settings.upstreams, timeout_s=settings.upstream_timeout_s,
                                   raw=settings.fast_path)
        self.stdio_principal = stdio_principal
        # signs the requestState of a 2026-07-28 confirmation round: the configured key (every
        # replica verifies what another issued), else one made for this process
        key = settings.resolved_confirm_secret() or secrets.token_bytes(32)
        self._state = URLSafeTimedSerializer(key, salt="policyengine.mcp.confirm")
        self.server: Server[Any] = Server(
            "policyengine", version="0.1.0", title="policyengine MCP gateway",
            instructions="Tool calls pass through policyengine: some need a human's approval first; a refused "
                         "call says why.",
            on_list_tools=self.list_tools, on_call_tool=self.call_tool, get_tool_input_schema=self.input_schema)

    async def start(self) -> None:
        """Connect the upstreams (one that cannot connect yet is retried in the background)."""
        await self.upstreams.start()

    async def aclose(self) -> None:
        """Disconnect the upstreams."""
        await self.upstreams.aclose()

    # ------------------------------------------------------------------ who is calling

    def principal(self, ctx: ServerRequestContext[Any, Any]) -> Principal:
        """The caller: the HTTP request's authenticated key, or the stdio principal."""
        req = ctx.request
        p = req.scope.get("pe.principal") if req is not None and hasattr(req, "scope") else self.stdio_principal
        if p is None:
            raise MCPError(types.INVALID_REQUEST, "not authenticated: send Authorization: Bearer <API key>")
        return p

    # ------------------------------------------------------------------ tools/list

    def input_schema(self, shown: str) -> dict[str, Any] | None:
        """The input schema of a shown tool, as its server declared it (the SDK checks a 2026-07-28
        request's `Mcp-Param-*` headers against it without listing every tool again)."""
        hit = self.upstreams.routes().get(shown)
        return dict(hit[1].input_schema) if hit is not None else None

    async def list_tools(self, ctx: ServerRequestContext[Any, Any],
                         params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        """The upstreams' tools less those this caller may never use."""
        p = self.principal(ctx)
        ups = [u for u in self.upstreams.by_name.values() if u.up]
        await asyncio.gather(*(u.refresh() for u in ups), return_exceptions=True)
        policy = self.rt.policies.snapshot().policy
        out = []
        for shown, (route, tool) in self.upstreams.routes().items():
            try:
                hidden = policy.never_allowed(probe_action(p, route.upstream.name, route.tool))
            except (GatewayError, ValueError):
                hidden = True
            if not hidden:
                out.append(tool if shown == tool.name else tool.model_copy(update={"name": shown}))
        return types.ListToolsResult(tools=out)

    # ------------------------------------------------------------------ tools/call

    async def call_tool(self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams,
                        ) -> types.CallToolResult | types.InputRequiredResult:
        """Decide, log, then forward, refuse, hold or ask the user (see the module docstring).

        A call the HTTP fast path (`policyengine.mcpgate.fast`) already decided and logged, but
        does not finish itself (anything but a forward), arrives decided in the request's scope."""
        req = ctx.request
        pre: Prepared | None = req.scope.pop(HANDED_OVER, None) if req is not None and hasattr(req, "scope") else None
        if pre is None:
            args = dict(params.arguments or {})
            pre = await self.decide(self.principal(ctx), params.name, args, dict(ctx.meta or {}), _session_id(ctx),
                                    time.perf_counter())
        call, server = pre.call, pre.server
        d = call.decision
        if d.effect != "allow" or pre.route is None:
            await pre.confirm()  # nothing is refused, held or answered before its decision is durable
        if d.effect == "deny":
            return self.denied(pre)
        released_by: str | None = None
        approval_id: str | None = None
        if d.effect in HELD:
            res = await self._held(ctx, params, call, server)
            if not isinstance(res, tuple):
                return res
            released_by, approval_id = res
        return await self._forward(ctx, pre, released_by, approval_id)

    async def decide(self, p: Principal, shown: str, args: dict[str, Any], meta: dict[str, Any],
                     session_id: str | None, t0: float, *, send_first: bool = False) -> Prepared:
        """The call decided (`kind=mcp_tool_call`), nothing run yet.

        Its decision row is committed before this returns when the settings say an allowed call
        to this tool commits first (`McpSettings.commit_first`), and always for a call that is
        not a plain allowed forward (a refusal or a hold is never answered before its row).
        Otherwise it is queued here and committed while the call is forwarded, or, with
        `send_first` (the fast path, which records it as soon as the request is written:
        `forward_wire`), not yet queued. `Prepared.confirm` before anything is answered.
        `args` loses the approval-resume argument. Raises MCPError: INVALID_PARAMS for a tool no
        upstream serves (logged as a refusal first), INTERNAL_ERROR when the decision log cannot
        take the row."""
        resume = args.pop(APPROVAL_ARG, None) or meta.get(APPROVAL_META)
        if resume is not None and not isinstance(resume, str):
            resume = str(resume)
        route = self.upstreams.route(shown)
        if route is not None:
            server, tool = route.upstream.name, route.tool
        else:
            owner = self.upstreams.owner_of(shown)
            if owner is None:  # logged as a refusal, answered as the protocol error it is
                why = f"Unknown tool: {shown!r} (no upstream MCP server serves it)"
                unknown = self._refused_call(p, "", shown, session_id, why, t0)
                with contextlib.suppress(DecisionLogUnavailable):
                    await unknown.record(extra={"mcp": {"server": None, "tool": shown[:200], "shown": shown[:200]}})
                raise MCPError(types.INVALID_PARAMS, why)
            server = owner.name
            tool = shown.split(".", 1)[1] if shown.startswith(f"{owner.name}.") else shown
        try:
            action = tool_action(p, server, tool, args, session_id=session_id,
                                 max_bytes=self.settings.max_argument_bytes, text_max_chars=self.settings.text_max_chars)
            call = await open_call(self.rt, p, action, kind=KIND, t0=t0)
        except (ArgumentsRefused, GatewayError) as exc:
            call = self._refused_call(p, server, tool, session_id, str(exc), t0)
        call.resume_id = resume
        extra = {"mcp": {"server": server, "tool": tool, "shown": shown}, **({"approval_id": resume} if resume else {})}
        pre = Prepared(call, route, server, tool, args, extra)
        plain = route is not None and resume is None and call.decision.effect == "allow"
        if not plain or self.settings.commit_first(route.read_only if route is not None else False):
            await pre.confirm()
        elif not send_first:
            pre.record()
            if pre.failed is not None:
                await pre.confirm()  # raises
        return pre

    def denied(self, pre: Prepared) -> types.CallToolResult:
        """The error result of a denied call (its outcome row queued)."""
        call, d = pre.call, pre.call.decision
        self._outcome(call, "denied", pre.server)
        return refusal(f"policyengine denied {pre.tool}: {reasons(d)}", outcome="denied", effect=d.effect,
                       decision_id=call.decision_id, reason=reasons(d))

    async def forward_wire(self, pre: Prepared) -> tuple[dict[str, Any], Callable[[], None]]:
        """An allowed call forwarded on the raw path: the upstream's result object as it came
        (camelCase, for the wire) with the decision's id in its `_meta`, or the error result of
        an upstream that is unavailable; and the function that queues its outcome row, for the
        caller to run once the answer is sent (the row is queued, never awaited, either way)."""
        call, server, tool, route = pre.call, pre.server, pre.tool, pre.route
        assert route is not None
        t = time.perf_counter()
        try:
            # a row not yet recorded is recorded as soon as the request is written, so it
            # commits while the server works on the call
            result = await route.upstream.call_raw(tool, pre.args, on_sent=pre.record)
        except UpstreamUnavailable as exc:
            await self._confirm_after_run(pre)
            why = str(exc)
            r = refusal(f"{tool} was allowed but not run: {why}", outcome="upstream_unavailable",
                        effect=call.decision.effect, decision_id=call.decision_id, reason=why)
            return (r.model_dump(mode="json", by_alias=True, exclude_none=True),
                    lambda: self._outcome(call, "upstream_unavailable", server, error=why))
        upstream_ms = round((time.perf_counter() - t) * 1000, 3)
        await self._confirm_after_run(pre)
        status = "error" if result.get("isError") else "ok"
        meta = result.get("_meta")
        result["_meta"] = {**(meta if isinstance(meta, dict) else {}), DECISION_META: call.decision_id}
        return result, lambda: self._outcome(call, "forwarded", server, upstream_status=status,
                                             upstream_ms=upstream_ms)

    async def _forward(self, ctx: ServerRequestContext[Any, Any], pre: Prepared, released_by: str | None,
                       approval_id: str | None) -> types.CallToolResult:
        call, route, server, tool = pre.call, pre.route, pre.server, pre.tool
        extra = {"released_by": released_by, "approval_id": approval_id}
        extra = {k: v for k, v in extra.items() if v is not None}
        if route is None:
            u = self.upstreams.by_name.get(server)
            why = f"upstream MCP server {server!r} is unavailable" + (f": {u.last_error}" if u and u.last_error else "")
            self._outcome(call, "upstream_unavailable", server, error=why, **extra)
            return refusal(f"{tool} was allowed but not run: {why}", outcome="upstream_unavailable",
                           effect=call.decision.effect, decision_id=call.decision_id, reason=why)
        t = time.perf_counter()
        try:
            # the server's own progress reaches the client when the client asked for progress
            relay = ctx.session.report_progress if (ctx.meta or {}).get("progress_token") is not None else None
            result = await route.upstream.call(tool, pre.args, progress=relay)
        except UpstreamUnavailable as exc:
            await self._confirm_after_run(pre)
            self._outcome(call, "upstream_unavailable", server, error=str(exc), **extra)
            return refusal(f"{tool} was allowed but not run: {exc}", outcome="upstream_unavailable",
                           effect=call.decision.effect, decision_id=call.decision_id, reason=str(exc))
        upstream_ms = round((time.perf_counter() - t) * 1000, 3)
        await self._confirm_after_run(pre)
        self._outcome(call, "forwarded", server, upstream_status="error" if result.is_error else "ok",
                      upstream_ms=upstream_ms, **extra)
        # the decision that let it through, for the client's own records
        return result.model_copy(update={"meta": {**(result.meta or {}), DECISION_META: call.decision_id}})

    async def _confirm_after_run(self, pre: Prepared) -> None:
        """The decision row's commit, awaited after the call was sent: the answer is discarded
        when it cannot commit (the call may have run; said loudly, with the decision's id)."""
        try:
            await pre.confirm()
        except MCPError:
            log.error("decision %s (tool %s on %s) was not committed; its call was sent and its answer is "
                      "withheld", pre.call.decision_id, pre.tool, pre.server)
            raise

    # ------------------------------------------------------------------ held calls

    async def _held(self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams, call: Call,
                    server: str) -> types.CallToolResult | types.InputRequiredResult | tuple[str, str | None]:
        """A held call: (who released it, the approval id) to forward it, or the result to answer."""
        d = call.decision
        tool = call.action.action
        if call.resume_id is None and d.obligations and all(ob.user_confirm for ob in d.obligations) \
                and _can_elicit(ctx):
            return await self._confirm(ctx, params, call, server)
        try:
            if call.resume_id is not None:
                held = await find(call)
                if held is None:
                    raise ApprovalError(f"approval {call.resume_id} was not found")
            else:
                res = await hold(call)
                if res is None:  # no approvals service runs: nobody could release it
                    self._outcome(call, "refused", server, error="no approvals service")
                    return refusal(f"{tool} needs human approval ({reasons(d)}) but no approvals service runs",
                                   outcome="refused", effect=d.effect, decision_id=call.decision_id, reason=reasons(d))
                held = Held.of_hold(res, None)
        except (ApprovalError, GatewayError) as exc:
            msg = getattr(exc, "message", None) or str(exc)
            self._outcome(call, "refused", server, error=msg, approval_id=call.resume_id)
            return refusal(f"{tool} was not run: {msg}", outcome="refused", effect=d.effect,
                           decision_id=call.decision_id, reason=msg)
        if held.pending:
            held = await self._wait(ctx, call, held)
        if held.approved:
            used = await self.rt.state.incr(f"mcp-approval-used:{held.approval_id}", 1, ttl=_USED_TTL_S)
            if used > 1:
                msg = f"approval {held.approval_id} has already released one call of {tool}; ask for a new one"
                self._outcome(call, "refused", server, error=msg, approval_id=held.approval_id)
                return refusal(f"{tool} was not run: {msg}", outcome="refused", effect=d.effect,
                               decision_id=call.decision_id, reason=msg, approval=held.json)
            return "reviewer", held.approval_id
        if held.pending:
            self._outcome(call, "pending", server, approval_id=held.approval_id)
            return refusal(
                f"{tool} is waiting for human approval {held.approval_id} ({reasons(d)}). It was not run. Once a "
                f"reviewer approves, call {tool} again with the same arguments and "
                f"_meta[\"{APPROVAL_META}\"] (or the argument {APPROVAL_ARG}) set to {held.approval_id}.",
                outcome="pending", effect=d.effect, decision_id=call.decision_id, reason=reasons(d),
                approval=held.json)
        by = f" by {held.json.get('decided_by')}" if held.json.get("decided_by") else ""
        why = f": {held.json.get('reason')}" if held.json.get("reason") else ""
        self._outcome(call, f"approval_{held.state}", server, approval_id=held.approval_id)
        return refusal(f"{tool} was not run: approval {held.approval_id} was {held.state}{by}{why}",
                       outcome=f"approval_{held.state}", effect=d.effect, decision_id=call.decision_id,
                       reason=reasons(d), approval=held.json)

    async def _wait(self, ctx: ServerRequestContext[Any, Any], call: Call, held: Held) -> Held:
        """`held` once decided, or as it is after `hold_wait_s`; a progress notification per step."""
        deadline = time.monotonic() + self.settings.hold_wait_s
        step = 0
        while held.pending:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            await ctx.session.report_progress(step, None, f"waiting for human approval {held.approval_id}")
            held = await wait(call, held, min(left, self.settings.progress_every_s))
            step += 1
        return held

    async def _confirm(self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams, call: Call,
                       server: str) -> types.CallToolResult | types.InputRequiredResult | tuple[str, None]:
        """Ask the user to confirm the call themselves (every held rule says `confirm by user`)."""
        d, tool = call.decision, call.action.action
        message = (f"The agent wants to call {tool} on {server} with {_args_line(call)}. "
                   f"Policy holds it: {reasons(d)}. Run it?")
        answer: types.ElicitResult | None
        if is_version_at_least(ctx.protocol_version, _MODERN):
            answer = self._confirm_answer(params, call)
            if answer is None:
                state = self._state.dumps({"h": action_hash(call.action), "k": call.principal.key_id})
                req = types.ElicitRequest(params=types.ElicitRequestFormParams(message=message,
                                                                               requested_schema=_CONFIRM_SCHEMA))
                self._outcome(call, "asked_user", server)
                return types.InputRequiredResult(input_requests={CONFIRM_KEY: req}, request_state=state)
        else:
            try:
                answer = await asyncio.wait_for(
                    ctx.session.elicit_form(message, _CONFIRM_SCHEMA, related_request_id=ctx.request_id),
                    self.settings.confirm_wait_s)
            except Exception as exc:  # no answer in time, the client refused, the channel broke
                why = ("the user did not answer in time" if isinstance(exc, TimeoutError)
                       else f"the user could not be asked: {getattr(exc, 'message', None) or exc}")
                self._outcome(call, "user_unanswered", server, error=why)
                return refusal(f"{tool} was not run: {why}", outcome="user_unanswered", effect=d.effect,
                               decision_id=call.decision_id, reason=reasons(d))
        content = answer.content or {}
        if answer.action == "accept" and content.get("confirm") is True:
            return "user", None
        self._outcome(call, "user_declined", server, elicitation=answer.action)
        return refusal(f"{tool} was not run: the user did not confirm it ({answer.action})", outcome="user_declined",
                       effect=d.effect, decision_id=call.decision_id, reason=reasons(d))

    def _confirm_answer(self, params: types.CallToolRequestParams, call: Call) -> types.ElicitResult | None:
        """The user's answer on a 2026-07-28 retry, when its requestState is ours, for this very call."""
        answer = (params.input_responses or {}).get(CONFIRM_KEY)
        if not isinstance(answer, types.ElicitResult) or not params.request_state:
            return None
        try:
            state = self._state.loads(params.request_state, max_age=self.settings.confirm_wait_s)
        except BadSignature:
            return None
        if state.get("h") != action_hash(call.action) or state.get("k") != call.principal.key_id:
            return None
        return answer

    # ------------------------------------------------------------------ the log

    def cancelled(self, pre: Prepared, why: str) -> None:
        """Queue the outcome row of an allowed call whose client went away before its answer
        (`cancelled`, with why); the upstream call was cancelled with it. Its decision row is
        recorded first if it was not yet (the request may have been sent)."""
        pre.record()
        if pre.commit is not None:
            pre.commit.abandon()  # nobody waits for it now: a failure is logged, not raised
        elif pre.failed is not None:
            log.error("decision %s (tool %s on %s, cancelled by its client) was not committed: %s",
                      pre.call.decision_id, pre.tool, pre.server, pre.failed)
        self._outcome(pre.call, "cancelled", pre.server, reason=why)

    def _outcome(self, call: Call, outcome: str, server: str, **extra: Any) -> None:
        call.outcome(outcome=outcome, model=None, attempts=[], kind=OUTCOME_KIND, upstream=server, **extra)

    def _refused_call(self, p: Principal, server: str, tool: str, session_id: str | None, why: str,
                      t0: float) -> Call:
        """A Call for a tools/call that cannot be evaluated (its arguments are refused): a deny."""
        snap = self.rt.policies.snapshot()
        tool = tool.replace("\x00", "?")[:200]  # a client's name, stored: no NUL, within the column
        action = Action(action=tool or "?", tenant=p.tenant, actor=p.subject, session_id=session_id,
                        channel="mcp", fields={"mcp": {"server": server, "tool": tool}})
        hit = RuleHit(rule_id="gateway:mcp-tool-call", kind="tool_call", effect="deny", source="tool call arguments",
                      because=[why])
        pol = snap.policy
        decision = Decision(effect="deny", action=action.action, rules=[hit], policy_name=pol.name,
                            policy_version=pol.version, policy_hash=pol.hash)
        return Call(self.rt, p, action, pol, None, decision, kind=KIND, t0=t0)


def _session_id(ctx: ServerRequestContext[Any, Any]) -> str | None:
    req = ctx.request
    if req is None or not hasattr(req, "headers"):
        return None
    sid = req.headers.get("mcp-session-id")
    return sid[:200] if sid else None


def _can_elicit(ctx: ServerRequestContext[Any, Any]) -> bool:
    """The client declared form elicitation, and this request can carry a question to it."""
    caps = ctx.session.client_capabilities
    e = caps.elicitation if caps is not None else None
    if e is None or (e.form is None and e.url is not None):
        return False
    return is_version_at_least(ctx.protocol_version, _MODERN) or ctx.session.can_send_request


def _args_line(call: Call) -> str:
    fields = {k: v for k, v in call.action.fields.items() if k != "mcp"}
    text = ", ".join(f"{k}={_show(v)}" for k, v in list(fields.items())[:8])
    return text[:400] or "no arguments"


def _show(v: Any) -> str:
    if isinstance(v, dict) and set(v) == {"amount", "currency"}:
        return f"{v['amount']} {v['currency']}"
    return repr(v)[:80]
