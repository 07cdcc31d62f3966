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
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
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
    "EvaluateResult", "PolicyEngineClient", "PolicyEngineError", "SignatureError", "verify_callback",
]
