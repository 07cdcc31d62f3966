"""The Python client for applications and agents.

    from policyengine.client import PolicyEngineClient, ActionDenied, ApprovalNotGranted

    pe = PolicyEngineClient("https://policy.internal", api_key=os.environ["PE_KEY"])

    # 1. ask
    result = await pe.evaluate("refund", fields={"amount": "150 GBP", "order": "A-1001"}, actor="agent-7")
    if result.held:
        status = await pe.wait_for_approval(result.approval_id, timeout=3600)

    # 2. or let the guard do the loop around a tool function
    @pe.guard("refund", actor="agent-7")
    async def refund(order: str, amount: str) -> str: ...

    await refund(order="A-1001", amount="150 GBP")  # runs now, after approval, or raises

    # 3. verify a signed callback in your web framework
    outcome = verify_callback(body_bytes, request.headers, secret=os.environ["PE_CALLBACK_SECRET"])

The guard evaluates the call's arguments as the action's fields; a held call
waits for the approval and then runs the *approved* revision (a reviewer may
have edited the arguments); a denied, rejected or timed-out call raises and the
function never runs.

Tool-calling agents (the `openai` SDK against the gateway)
----------------------------------------------------------

The gateway judges every tool call a model returns before the answer reaches the agent: an
allowed call stays in `message.tool_calls`; a denied or held one is removed from it. Every
call, whatever its verdict, is listed in the answer's ``policyengine.tool_calls``. The loop:

    from policyengine.client import (ApprovalNotGranted, assistant_message, tool_refused_message,
                                     tool_result_message, tool_verdicts)

    completion = await openai_client.chat.completions.create(model="auto", messages=messages, tools=TOOLS)
    done = []                                   # (the call as it is put in the history, its tool message)
    for v in tool_verdicts(completion):         # every call, in the order the model wrote them
        if v.allowed:
            call = v.call()                     # run it as the model wrote it
        elif v.held:                            # e.g. refund(£150): a reviewer decides
            print("waiting for", v.approval_id)
            try:
                call = await pe.wait_for_tool_call(v, timeout=3600)   # the *approved* call
            except ApprovalNotGranted as exc:   # rejected, expired or cancelled: never run
                done.append((v.call(), tool_refused_message(v, str(exc))))
                continue
        else:                                   # denied: never run
            done.append((v.call(), tool_refused_message(v)))
            continue
        done.append((call, tool_result_message(call, await TOOLS_BY_NAME[call.name](**call.arguments))))
    messages.append(assistant_message(completion, [c for c, _ in done]))
    messages += [m for _, m in done]            # then ask the model again, for its answer

`wait_for_tool_call` long-polls ``GET /v1/approvals/{id}?wait=N`` and returns the call as
the reviewer released it: the tool's name and the approved revision's arguments (a reviewer
may have edited them; the approvals service evaluated the edit against the policy again
before approving it). It raises `ApprovalNotGranted` for a rejected, expired or cancelled
approval, `ApprovalWaitTimeout` when the wait runs out first, and `ApprovalTampered` when the
approval is not the one the verdict names or its action does not match its hash, so a held
call is run only after, and only as, a reviewer approved it. An agent that gives up waiting
withdraws the approval with `cancel_approval`, so nobody approves a call that will not run.
`tool_verdicts` raises
`UnjudgedToolCalls` for an answer whose tool calls carry no verdicts (it did not come
through the gateway), so an agent written this way fails closed.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field

from policyengine.approvals.hashing import action_hash, canonical_json
from policyengine.approvals.signing import SIGNATURE_HEADER, SignatureError, verify_body
from policyengine.types import Decision

F = TypeVar("F", bound=Callable[..., Any])
TERMINAL = ("approved", "rejected", "expired", "cancelled")


class PolicyEngineError(Exception):
    """The service answered with an error (or could not be reached)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(f"{status} {code or ''}: {message}".strip())
        self.status, self.message, self.code = status, message, code


class ActionDenied(Exception):
    """The policy denied the action; `result.rules` says which rule."""

    def __init__(self, result: EvaluateResult) -> None:
        rules = ", ".join(r.rule_id for r in result.rules) or "default deny"
        super().__init__(f"{result.action} denied by policy ({rules})")
        self.result = result


class ApprovalNotGranted(Exception):
    """The approval ended rejected, expired (timed out) or cancelled."""

    def __init__(self, status: ApprovalStatus) -> None:
        why = f": {status.reason}" if status.reason else ""
        super().__init__(f"approval {status.id} {status.state}{' by ' + status.decided_by if status.decided_by else ''}{why}")
        self.status = status


class ApprovalWaitTimeout(TimeoutError):
    """`wait_for_approval` gave up: the approval was still pending when its timeout ran out."""

    def __init__(self, approval_id: str, waited_s: float) -> None:
        super().__init__(f"approval {approval_id} still pending after {waited_s:.0f}s")
        self.approval_id = approval_id


class ApprovalTampered(Exception):
    """The approved action does not match its hash or what the caller is about to run."""


class EvaluateResult(Decision):
    """The Decision plus the service's envelope (decision id, held, approval)."""

    model_config = ConfigDict(extra="ignore")

    decision_id: str | None = None
    held: bool = False
    approval: dict[str, Any] | None = None

    @property
    def approval_id(self) -> str | None:
        """The id of the approval holding this action, or None when the decision was not held."""
        return (self.approval or {}).get("approval_id")


class ApprovalStatus(BaseModel):
    """An approval as the service reports it: its state, whether the action was released, and the
    action (possibly a reviewer's edited revision) with its hash."""

    model_config = ConfigDict(extra="ignore")

    id: str
    state: str
    released: bool = False
    action_name: str = ""
    action: dict[str, Any] = Field(default_factory=dict)
    action_hash: str = ""
    original_action_hash: str = ""
    revision: int = 1
    edited: bool = False
    decided_by: str | None = None
    decided_via: str | None = None
    reason: str | None = None

    @property
    def terminal(self) -> bool:
        """True once the approval is decided for good: approved, rejected, expired or cancelled."""
        return self.state in TERMINAL

    @property
    def fields(self) -> dict[str, Any]:
        """A copy of the (approved) action's fields; empty when it has none."""
        return dict(self.action.get("fields") or {})


class PolicyEngineClient:
    """An async client for one policy service: evaluate actions, wait for approvals, guard tool functions.

    Every service error or unreachable service raises `PolicyEngineError`. An HTTP client
    passed as `http` is used as is (the API key is added to its headers) and is not closed
    by `aclose`.
    """

    def __init__(
        self, base_url: str, api_key: str | None = None, *, timeout_s: float = 30.0,
        http: httpx.AsyncClient | None = None, max_wait_per_poll_s: float = 55.0,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._base_url, self._api_key = base_url.rstrip("/"), api_key
        self._own = http is None
        self._http = http or httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        if not self._own:
            self._http.headers.update(headers)
        self._timeout_s = timeout_s
        self._poll_s = max_wait_per_poll_s

    async def __aenter__(self) -> PolicyEngineClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client this client created; one passed in as `http` is left open."""
        if self._own:
            await self._http.aclose()

    async def _request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                       timeout: float | None = None) -> Any:
        try:
            resp = await self._http.request(method, path, json=json, params=params,
                                            timeout=timeout if timeout is not None else self._timeout_s)
        except httpx.HTTPError as exc:
            raise PolicyEngineError(0, f"cannot reach the policy service: {type(exc).__name__}: {exc}", "unreachable")
        if resp.status_code >= 400:
            try:
                err = resp.json().get("error") or {}
                msg, code = err.get("message") or resp.text, err.get("code")
            except ValueError:
                msg, code = resp.text, None
            raise PolicyEngineError(resp.status_code, msg, code)
        return resp.json()

    async def evaluate(
        self, action: str | Mapping[str, Any] | BaseModel, *, fields: Mapping[str, Any] | None = None,
        callback_url: str | None = None, request_id: str | None = None, **attrs: Any,
    ) -> EvaluateResult:
        """Ask the policy about an action: a name plus fields/attrs, a dict, or an `Action`."""
        if isinstance(action, BaseModel):
            body = action.model_dump(mode="json", exclude_none=True)
        elif isinstance(action, Mapping):
            body = dict(action)
        else:
            body = {"action": action, **{k: v for k, v in attrs.items() if v is not None}}
            if fields:
                body["fields"] = dict(fields)
        if callback_url:
            body["callback_url"] = callback_url
        if request_id:
            body["request_id"] = request_id
        return EvaluateResult.model_validate(await self._request("POST", "/v1/evaluate", json=_jsonable(body)))

    async def get_approval(self, approval_id: str) -> ApprovalStatus:
        """The approval's current status, at once (no waiting); PolicyEngineError when the service refuses."""
        return ApprovalStatus.model_validate(await self._request("GET", f"/v1/approvals/{approval_id}"))

    async def wait_for_approval(self, approval_id: str, *, timeout: float | None = None) -> ApprovalStatus:
        """Long-poll until the approval is decided; raises ApprovalWaitTimeout after `timeout` seconds.

        Transient errors (network, 5xx) are retried with backoff until the timeout.
        """
        start = time.monotonic()
        backoff = 0.5
        while True:
            remaining = None if timeout is None else timeout - (time.monotonic() - start)
            if remaining is not None and remaining <= 0:
                raise ApprovalWaitTimeout(approval_id, time.monotonic() - start)
            wait = self._poll_s if remaining is None else max(0.0, min(self._poll_s, remaining))
            try:
                data = await self._request("GET", f"/v1/approvals/{approval_id}", params={"wait": round(wait, 3)},
                                           timeout=wait + self._timeout_s)
            except PolicyEngineError as exc:
                if exc.status and exc.status < 500:
                    raise
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10)
                continue
            status = ApprovalStatus.model_validate(data)
            if status.terminal:
                if action_hash(status.action) != status.action_hash:
                    raise ApprovalTampered(f"approval {approval_id}: the approved action does not match its hash")
                return status

    async def cancel_approval(self, approval_id: str, *, reason: str | None = None) -> ApprovalStatus:
        """Withdraw a pending approval this client's key requested (e.g. the agent stopped waiting), so no
        reviewer approves what will not run; PolicyEngineError (409) when it was already decided."""
        body = {"reason": reason} if reason else {}
        return ApprovalStatus.model_validate(await self._request("POST", f"/v1/approvals/{approval_id}/cancel",
                                                                 json=body))

    async def wait_for_tool_call(self, verdict: ToolVerdict, *, timeout: float | None = None) -> ToolCall:
        """Wait for the approval of a held tool call and return the call as the reviewer released it.

        The returned call has the verdict's call id, the tool's name and the approved
        revision's arguments (money the gateway read as ``{"amount", "currency"}`` is given
        back in the form the model wrote it: ``"amount": 150`` beside ``"currency": "GBP"``).
        Raises `ValueError` for a verdict that is not held, `ApprovalNotGranted` when the
        approval ended rejected, expired or cancelled, `ApprovalWaitTimeout` after `timeout`
        seconds, and `ApprovalTampered` when the approval is for another tool or its action
        does not match its hash. A call returned here is released: run it once.
        """
        if not verdict.held or not verdict.approval_id:
            raise ValueError(f"tool call {verdict.name!r} is not held for approval (effect {verdict.effect})")
        status = await self.wait_for_approval(verdict.approval_id, timeout=timeout)
        if not status.released:
            raise ApprovalNotGranted(status)
        if status.id != verdict.approval_id:
            raise ApprovalTampered(f"asked for approval {verdict.approval_id}, the service answered {status.id}")
        name = status.action.get("action") or status.action_name
        if name != verdict.name:
            raise ApprovalTampered(f"approval {status.id} released {name!r}, not the tool call {verdict.name!r}")
        return ToolCall(verdict.call_id or _call_id(verdict.index), verdict.name,
                        _tool_arguments(status.fields, verdict.arguments, status.id), approval=status)

    def guard(
        self, action: str, *, fields: Callable[..., Mapping[str, Any]] | None = None, timeout: float | None = None,
        callback_url: str | None = None, **attrs: Any,
    ) -> Callable[[F], F]:
        """Decorate a tool function so it runs only when the policy allows it (or a reviewer approved it).

        `fields(*args, **kwargs)` builds the action's fields; by default the call's
        named arguments are the fields. If a reviewer edited the action, the function
        is called with the approved fields (default mapping) — with a custom mapping
        the approved fields are passed as the keyword `approved_fields` when the
        function accepts it, and the call is refused otherwise.
        """

        def deco(fn: F) -> F:
            sig = inspect.signature(fn)

            def build(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[dict[str, Any], inspect.BoundArguments]:
                bound = sig.bind(*args, **kwargs)
                bound.apply_defaults()
                data = dict(fields(*args, **kwargs)) if fields else {
                    k: v for k, v in bound.arguments.items() if k not in ("self", "cls", "approved_fields")
                }
                return _jsonable(data), bound

            async def run_async(*args: Any, **kwargs: Any) -> Any:
                return await guarded(self, args, kwargs)

            async def run_sync(*args: Any, **kwargs: Any) -> Any:
                # a fresh connection pool per call: each asyncio.run() has its own event loop
                async with PolicyEngineClient(self._base_url, self._api_key, timeout_s=self._timeout_s,
                                              max_wait_per_poll_s=self._poll_s) as client:
                    return await guarded(client, args, kwargs)

            async def guarded(client: PolicyEngineClient, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                data, bound = build(args, kwargs)
                result = await client.evaluate(action, fields=data, callback_url=callback_url, **attrs)
                if result.effect == "allow":
                    return await _call(fn, bound.args, bound.kwargs)
                if result.effect == "deny" or not result.approval_id:
                    raise ActionDenied(result)
                status = await client.wait_for_approval(result.approval_id, timeout=timeout)
                if not status.released:
                    raise ApprovalNotGranted(status)
                approved = status.fields
                if canonical_json(approved) == canonical_json(data):
                    return await _call(fn, bound.args, bound.kwargs)
                if fields is None:
                    unknown = set(approved) - set(sig.parameters)
                    if unknown:
                        raise ApprovalTampered(f"approved revision has fields the function does not take: {sorted(unknown)}")
                    new_kwargs = {**bound.arguments, **approved}
                    return await _call(fn, (), new_kwargs)
                if "approved_fields" in sig.parameters:
                    return await _call(fn, bound.args, {**bound.kwargs, "approved_fields": approved})
                raise ApprovalTampered(
                    f"approval {status.id} approved an edited revision; {fn.__name__} cannot take it "
                    "(accept an `approved_fields` argument or use the default field mapping)"
                )

            if inspect.iscoroutinefunction(fn):
                @functools.wraps(fn)
                async def awrapper(*args: Any, **kwargs: Any) -> Any:
                    return await run_async(*args, **kwargs)

                return awrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                try:
                    asyncio.get_running_loop()
                except RuntimeError:
                    return asyncio.run(run_sync(*args, **kwargs))
                raise RuntimeError(f"{fn.__name__} is guarded and synchronous: call it outside an event loop, "
                                   "or make it async")

            return wrapper  # type: ignore[return-value]

        return deco


async def _call(fn: Callable[..., Any], args: Any, kwargs: dict[str, Any]) -> Any:
    out = fn(*args, **kwargs)
    if isinstance(out, Awaitable):
        return await out
    return out


def _jsonable(data: Any) -> Any:
    return orjson.loads(canonical_json(data))


class UnjudgedToolCalls(ValueError):
    """An answer has tool calls but no ``policyengine.tool_calls`` verdicts: it did not come through the
    gateway (or was altered on the way), so none of its calls may be run."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A tool call the agent may run: its call id, the tool's name and the arguments to run it with.

    `approval` is the approval that released it (None for a call the policy allowed at once);
    `edited` says a reviewer changed its arguments before approving.
    """

    call_id: str
    name: str
    arguments: dict[str, Any]
    approval: ApprovalStatus | None = None

    @property
    def edited(self) -> bool:
        """True when the call was released as a reviewer's edited revision."""
        return bool(self.approval and self.approval.edited)

    def as_openai(self) -> dict[str, Any]:
        """The call as an assistant message's ``tool_calls`` entry (arguments as a JSON string)."""
        return {"id": self.call_id, "type": "function",
                "function": {"name": self.name, "arguments": canonical_json(self.arguments)}}


@dataclass(frozen=True, slots=True)
class ToolVerdict:
    """The gateway's decision on one tool call of an answer (an entry of ``policyengine.tool_calls``).

    `effect` is allow, deny, require_approval or escalate; `arguments` are the call's parsed
    arguments as the model wrote them (None when they could not be parsed; a denied call
    then carries its reason only); `approval` is the approval's JSON when the call is held.
    """

    index: int
    call_id: str | None
    name: str
    effect: str
    decision_id: str | None
    reason: str
    approval: dict[str, Any] | None
    arguments: dict[str, Any] | None

    @property
    def allowed(self) -> bool:
        """The policy allowed the call: it is in the answer's ``tool_calls``, to run now."""
        return self.effect == "allow"

    @property
    def held(self) -> bool:
        """The call waits for a reviewer (require_approval or escalate); `approval_id` names the approval."""
        return self.effect in ("require_approval", "escalate")

    @property
    def denied(self) -> bool:
        """The call was refused (by a rule, the default deny, or unreadable arguments): never run it."""
        return not (self.allowed or self.held)

    @property
    def approval_id(self) -> str | None:
        """The id of the approval holding the call, or None."""
        return (self.approval or {}).get("approval_id")

    def call(self) -> ToolCall:
        """The call as the model wrote it (its arguments, or ``{}`` when unreadable): run it only when
        `allowed`; for a held or denied call it is what to record in the conversation's history."""
        return ToolCall(self.call_id or _call_id(self.index), self.name, dict(self.arguments or {}))


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key)
    value = getattr(obj, key, None)
    if value is None:
        extra = getattr(obj, "model_extra", None)
        if isinstance(extra, Mapping):
            value = extra.get(key)
    return value


def _message(completion: Any) -> Any:
    choices = _get(completion, "choices") or []
    return _get(choices[0], "message") if choices else None


def _call_id(index: int) -> str:
    return f"call_pe_{index}"


def _args_of(tc: Any) -> dict[str, Any] | None:
    raw = _get(_get(tc, "function"), "arguments")
    if isinstance(raw, Mapping):
        return dict(raw)
    try:
        out = orjson.loads(raw or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return None
    return out if isinstance(out, dict) else None


def tool_verdicts(completion: Any, *, tool_calls: Sequence[Any] | None = None) -> list[ToolVerdict]:
    """The gateway's verdict on every tool call of an answer, in the order the model wrote them.

    `completion` is the openai SDK's ChatCompletion (the verdicts are in its `model_extra`) or
    its dict form; for a stream, pass the finishing chunk (it carries the verdicts) and the
    tool calls accumulated from the deltas as `tool_calls`. Allowed verdicts get their
    arguments from the executable ``tool_calls`` (matched by id, else in order). Returns ``[]``
    for an answer without tool calls; raises `UnjudgedToolCalls` for one whose tool calls
    carry no verdicts, or whose verdicts allow a call it does not carry.
    """
    pe = _get(completion, "policyengine")
    entries = _get(pe, "tool_calls") if pe is not None else None
    message = _message(completion)
    if tool_calls is not None:
        executable = list(tool_calls)
    else:
        executable = list(_get(message, "tool_calls") or []) if message is not None else []
    if not entries:
        if executable:
            raise UnjudgedToolCalls("the answer has tool calls without policyengine verdicts: it did not come "
                                    "through the policyengine gateway, so none of them may be run")
        return []
    by_id = {_get(tc, "id"): tc for tc in executable if _get(tc, "id")}
    in_order = iter(executable)
    out = []
    for i, e in enumerate(entries):
        e = dict(e) if isinstance(e, Mapping) else dict(getattr(e, "__dict__", {}))
        effect = str(e.get("effect") or "deny")
        args = e.get("arguments") if isinstance(e.get("arguments"), dict) else None
        call_id = e.get("id") if isinstance(e.get("id"), str) else None
        if effect == "allow":
            tc = by_id.get(call_id) if call_id else None
            tc = tc if tc is not None else next(in_order, None)
            if tc is None:
                raise UnjudgedToolCalls(f"the verdicts allow tool call {i} ({e.get('name')}), which the answer "
                                        "does not carry")
            args = _args_of(tc)
            call_id = call_id or _get(tc, "id")
        out.append(ToolVerdict(int(e.get("index", i)), call_id, str(e.get("name") or ""), effect,
                               e.get("decision_id"), str(e.get("reason") or ""),
                               e.get("approval") if isinstance(e.get("approval"), dict) else None, args))
    return out


def held_calls(completion: Any) -> list[ToolVerdict]:
    """The tool calls of an answer that wait for a reviewer (see `tool_verdicts`)."""
    return [v for v in tool_verdicts(completion) if v.held]


def denied_calls(completion: Any) -> list[ToolVerdict]:
    """The tool calls of an answer the policy refused (see `tool_verdicts`)."""
    return [v for v in tool_verdicts(completion) if v.denied]


def _is_money(v: Any) -> bool:
    return (isinstance(v, Mapping) and set(v) == {"amount", "currency"}
            and isinstance(v["amount"], int | float) and not isinstance(v["amount"], bool))


def _tool_arguments(fields: dict[str, Any], original: Mapping[str, Any] | None, approval_id: str) -> dict[str, Any]:
    """The approved fields as tool arguments: a money value the gateway built from a plain number
    beside `currency` is that number again (its currency must then be the `currency` argument's)."""
    out = dict(fields)
    cur = fields.get("currency")
    for k, v in fields.items():
        if not _is_money(v) or not isinstance(cur, str) or (original is not None and _is_money(original.get(k))):
            continue
        if v["currency"] != cur:
            raise ApprovalTampered(f"approval {approval_id}: {k} is in {v['currency']} but the currency "
                                   f"argument is {cur}; the approved call is ambiguous")
        out[k] = v["amount"]
    return out


def _content(result: Any) -> str:
    if isinstance(result, str):
        return result
    return orjson.dumps(_jsonable(result)).decode()


def tool_result_message(call: ToolCall | ToolVerdict, result: Any) -> dict[str, Any]:
    """The ``role: "tool"`` message handing a call's result back to the model (a str as is, anything
    else as JSON)."""
    call_id = call.call_id if isinstance(call, ToolCall) else (call.call_id or _call_id(call.index))
    return {"role": "tool", "tool_call_id": call_id, "content": _content(result)}


def tool_refused_message(verdict: ToolVerdict, why: str | None = None) -> dict[str, Any]:
    """The ``role: "tool"`` message telling the model a call was not run, and why (by default the
    verdict's reason)."""
    what = "denied by policy" if verdict.denied else "not approved"
    return tool_result_message(verdict, {"error": f"not run: {what}", "tool": verdict.name,
                                         "reason": why or verdict.reason})


_NOTE = "[policyengine] The tool call "


def assistant_message(completion: Any, calls: Sequence[ToolCall | ToolVerdict]) -> dict[str, Any]:
    """The answer's assistant message for the conversation's history, with `calls` as its ``tool_calls``.

    Put every call the model made in `calls` (those run, as run, and those refused), each
    followed by its tool message: the API requires a tool message per call. The gateway's
    notes about removed calls are dropped from the content, since the tool messages report them.
    """
    message = _message(completion)
    content = _get(message, "content") if message is not None else None
    if isinstance(content, str):
        content = "\n".join(line for line in content.split("\n") if not line.startswith(_NOTE)).strip() or None
    out: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        out["tool_calls"] = [(c if isinstance(c, ToolCall) else c.call()).as_openai() for c in calls]
    return out


def verify_callback(
    body: bytes, headers: Mapping[str, str], secret: str, *, tolerance_s: float = 300, now: float | None = None,
) -> dict[str, Any]:
    """Check a callback's ``X-PolicyEngine-Signature`` (HMAC-SHA256 over "<t>.<body>", 5-minute window).

    Returns the parsed outcome, or raises SignatureError for a missing, forged,
    tampered or replayed callback. Check ``outcome["released"]`` before acting.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    verify_body(body, lower.get(SIGNATURE_HEADER.lower()), secret, tolerance_s=tolerance_s, now=now)
    data = orjson.loads(body)
    if not isinstance(data, dict):
        raise SignatureError("callback body is not a JSON object")
    return data


__all__ = [
    "ActionDenied", "ApprovalNotGranted", "ApprovalStatus", "ApprovalTampered", "ApprovalWaitTimeout",
    "EvaluateResult", "PolicyEngineClient", "PolicyEngineError", "SignatureError", "ToolCall", "ToolVerdict",
    "UnjudgedToolCalls", "assistant_message", "denied_calls", "held_calls", "tool_refused_message",
    "tool_result_message", "tool_verdicts", "verify_callback",
]
