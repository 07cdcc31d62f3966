"""Tool calls a model returns are actions: each is judged by the standing orders before the
client can run it.

For every tool call in an answer (plain or streamed, parallel calls included) the gateway
builds an Action: the tool's name is the action, its JSON arguments are the fields, and the
rest (tenant, actor, session, channel, tier, use case, the conversation's text and the
signals the chat decision already computed) comes from the chat's own Action, so a rule such
as `require approval for refund when amount > 100 GBP` or `escalate when text mentions
litigation` applies to a tool call exactly as it would to `/v1/evaluate`. A number argument
whose name is `amount`, ends in `_amount` or is one of `MONEY_NAMES`, beside a three-letter
`currency` argument, is money in that currency (`{"amount": 150, "currency": "GBP"}` compares
with `100 GBP`).

- **allow**: the call stays in the answer as the model wrote it.
- **deny**: the call is removed; the answer's `policyengine.tool_calls` lists it with the
  reason, and (setting `tool_calls_denied = "note"`, the default) a note is added to the
  message content that the client can show or hand back to the model.
- **require_approval / escalate**: the call is removed from the executable calls and
  listed with its approval (`approval.approval_id`); once a reviewer approves, the client
  runs the approved action (`GET /v1/approvals/{id}`: possibly with edited arguments, which
  the approvals service evaluates again).

Arguments that are not a JSON object, are larger than `tool_call_max_argument_bytes`, or
name no tool are denied with that reason, without evaluating the policy. Every verdict is a
decision row (`kind=tool_call`, `extra.chat_decision_id` = the chat's decision id), committed
before the answer is sent (step 5 of the commit order: a decision made on the answer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from policyengine.fastmodel import construct
from policyengine.gateway.call import HELD, Call
from policyengine.gateway.hold import hold, reasons
from policyengine.types import Action, Decision, RuleHit

__all__ = ["MONEY_NAMES", "ToolCallBuffer", "ToolVerdict", "apply_verdicts", "decide_tool_call", "judge_tool_calls",
           "strip_denied_tools", "tool_fields"]

# Argument names read as money when a `currency` argument stands beside them.
MONEY_NAMES = frozenset({"amount", "price", "total", "cost", "fee", "value", "refund", "balance"})
_NAME_MAX = 200


@dataclass(slots=True)
class ToolVerdict:
    """The decision on one tool call: its position, id and name, the effect, the decision
    row's id, a one-line reason, the approval when held, and the parsed arguments."""

    index: int
    call_id: str | None
    name: str
    effect: str
    decision_id: str
    reason: str
    approval: dict[str, Any] | None
    arguments: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        """The verdict as the answer's `policyengine.tool_calls` entry shows it."""
        out: dict[str, Any] = {"index": self.index, "id": self.call_id, "name": self.name, "effect": self.effect,
                               "decision_id": self.decision_id, "reason": self.reason}
        if self.approval is not None:
            out["approval"] = self.approval
        if self.effect != "allow" and self.arguments is not None:
            out["arguments"] = self.arguments
        return out


def tool_fields(args: dict[str, Any]) -> dict[str, Any]:
    """A tool call's arguments as an Action's fields: unchanged, except that a number argument
    read as money (see the module docstring) beside a three-letter `currency` becomes
    `{"amount": n, "currency": cur}`. Never mutates `args`."""
    cur = args.get("currency")
    if not (isinstance(cur, str) and len(cur) == 3 and cur.isalpha()):
        return args
    out = dict(args)
    for k, v in args.items():
        if (isinstance(v, int | float) and not isinstance(v, bool)
                and (k in MONEY_NAMES or k.endswith("_amount"))):
            out[k] = {"amount": v, "currency": cur}
    return out


def _refused(call: Call, name: str, because: str) -> Decision:
    hit = RuleHit(rule_id="gateway:tool-call", kind="tool_call", effect="deny", source="tool call arguments",
                  because=[because])
    d = call.decision
    return Decision(effect="deny", action=name or "?", rules=[hit], policy_name=d.policy_name,
                    policy_version=d.policy_version, policy_hash=d.policy_hash)


def _parse(tc: Any, limit: int) -> tuple[str, str | None, dict[str, Any] | None, str | None]:
    """(name, id, arguments, why it is refused)."""
    if not isinstance(tc, dict):
        return "", None, None, "the tool call is not an object"
    fn = tc.get("function") if isinstance(tc.get("function"), dict) else {}
    name, call_id = fn.get("name"), tc.get("id") if isinstance(tc.get("id"), str) else None
    if not isinstance(name, str) or not name or len(name) > _NAME_MAX or "\x00" in name:
        return (name if isinstance(name, str) else "")[:_NAME_MAX], call_id, None, "the tool call names no valid tool"
    raw = fn.get("arguments")
    if isinstance(raw, dict):
        args: Any = raw
    else:
        if raw is None or raw == "":
            raw = "{}"
        if not isinstance(raw, str):
            return name, call_id, None, "the tool call's arguments are not a JSON string"
        if len(raw) > limit:
            return name, call_id, None, (f"the tool call's arguments are {len(raw)} bytes, over the limit of "
                                         f"{limit} (tool_call_max_argument_bytes)")
        try:
            args = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return name, call_id, None, f"the tool call's arguments are not valid JSON: {exc}"
    if not isinstance(args, dict):
        return name, call_id, None, f"the tool call's arguments must be a JSON object, got {type(args).__name__}"
    return name, call_id, args, None


def decide_tool_call(call: Call, index: int, tc: Any) -> tuple[Call, str | None, dict[str, Any] | None, str]:
    """Decide one tool call of `call`'s answer (no I/O): its own Call (action, decision, id), the
    call's id, the parsed arguments and the one-line reason."""
    rt = call.runtime
    name, call_id, args, refused = _parse(tc, rt.settings.tool_call_max_argument_bytes)
    # the chat's Action, validated at the boundary, with this call's name and fields: built
    # without validating again (the name was checked by _parse; fields are free-form data)
    base = call.action.__dict__
    if refused is not None:
        action = construct(Action, {**base, "action": name or "?", "fields": {}, "requested_model": None,
                                    "prompt_tokens": None})
        decision = _refused(call, name, refused)
    else:
        assert args is not None
        action = construct(Action, {**base, "action": name, "fields": tool_fields(args), "requested_model": None,
                                    "prompt_tokens": None, "signals": dict(call.decision.signals)})
        decision = call.policy.evaluate(action, rt.signals)
    child = Call(rt, call.principal, action, call.policy, None, decision, kind="tool_call", t0=call.t0,
                 request_id=f"{call.request_id}:tool:{index}" if call.request_id else None)
    return child, call_id, args, refused or reasons(decision)


async def judge_tool_calls(call: Call, tool_calls: list[Any]) -> list[ToolVerdict]:
    """Decide every tool call of one answer, commit the decisions (one group commit), and create
    the approvals of the held ones. Returns one verdict per call, in order. Raises
    `DecisionLogUnavailable` when the rows cannot be committed (nothing may be released)."""
    children = [decide_tool_call(call, i, tc) for i, tc in enumerate(tool_calls)]
    pendings = [c.record(extra={"chat_decision_id": call.decision_id, "tool_call_id": call_id, "index": i})
                for i, (c, call_id, _, _) in enumerate(children)]
    for p in pendings:  # queued together: they commit in one batch, so waiting in turn costs nothing
        await p
    verdicts = []
    for i, (child, call_id, args, why) in enumerate(children):
        approval = await hold(child) if child.decision.effect in HELD else None
        verdicts.append(ToolVerdict(i, call_id, child.action.action, child.decision.effect, child.decision_id, why,
                                    approval, args))
    return verdicts


def _note(verdicts: list[ToolVerdict]) -> str:
    lines = []
    for v in verdicts:
        if v.effect == "deny":
            lines.append(f"[policyengine] The tool call {v.name} was not run: denied by policy ({v.reason}).")
        elif v.effect in HELD:
            apr = (v.approval or {}).get("approval_id")
            lines.append(f"[policyengine] The tool call {v.name} is waiting for human approval"
                         + (f" ({apr})" if apr else "") + f": {v.reason}.")
    return "\n".join(lines)


def apply_verdicts(message: dict[str, Any], verdicts: list[ToolVerdict], *, note: bool) -> tuple[dict[str, Any], bool]:
    """The assistant message with only the allowed tool calls left executable (their order
    kept) and, when `note`, a note about the others appended to its content. Returns the new
    message and whether any tool call is left."""
    calls = message.get("tool_calls") or []
    kept = [tc for tc, v in zip(calls, verdicts, strict=True) if v.effect == "allow"]
    msg = dict(message)
    if kept:
        msg["tool_calls"] = kept
    else:
        msg.pop("tool_calls", None)
    if note and len(kept) < len(calls):
        text = _note(verdicts)
        content = msg.get("content")
        msg["content"] = f"{content}\n\n{text}" if isinstance(content, str) and content else text
    return msg, bool(kept)


def strip_denied_tools(call: Call, body: dict[str, Any]) -> dict[str, Any]:
    """The request without the tools the standing orders deny whatever the arguments (setting
    `strip_denied_tools`): the model never sees them. Other tools stay."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return body
    keep = []
    for t in tools:
        fn = t.get("function") if isinstance(t, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not call.policy.always_denied(name):
            keep.append(t)
    if len(keep) == len(tools):
        return body
    out = {**body, "tools": keep}
    if not keep:
        out.pop("tools")
        out.pop("tool_choice", None)
    return out


class ToolCallBuffer:
    """Holds back a stream's tool-call deltas until the model has finished the calls, so none
    reaches the client before it is judged.

    `feed(chunk)` returns the chunk to send now (its tool-call deltas removed; None when nothing
    is left of it) and, separately, the finishing chunk when tool calls were buffered (it is
    held back: judge `calls()`, then send `release(...)`). Content deltas pass through as they
    come. A stream that ends before its finishing chunk releases no tool call.
    """

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[int, dict[str, Any]] = {}

    def feed(self, chunk: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """(what to send now, the held-back finishing chunk or None)."""
        choices = chunk.get("choices")
        if not choices:
            return chunk, None
        ch = choices[0]
        delta = ch.get("delta") or {}
        deltas = delta.get("tool_calls")
        if deltas:
            for d in deltas:
                if not isinstance(d, dict):
                    continue
                acc = self._calls.setdefault(int(d.get("index") or 0), {"id": None, "type": "function",
                                                                         "function": {"name": "", "arguments": ""}})
                if d.get("id"):
                    acc["id"] = d["id"]
                fn = d.get("function") or {}
                if fn.get("name"):
                    acc["function"]["name"] += fn["name"]
                if fn.get("arguments"):
                    acc["function"]["arguments"] += fn["arguments"]
            delta = {k: v for k, v in delta.items() if k != "tool_calls"}
            ch = {**ch, "delta": delta}
            chunk = {**chunk, "choices": [ch, *choices[1:]]}
        if ch.get("finish_reason") and self._calls:
            return None, chunk
        if deltas and not any(v for k, v in delta.items() if k != "role") and chunk.get("usage") is None:
            return None, None
        return chunk, None

    def calls(self) -> list[dict[str, Any]]:
        """The buffered tool calls, whole, in index order."""
        return [self._calls[i] for i in sorted(self._calls)]

    def release(self, finished: dict[str, Any], verdicts: list[ToolVerdict], *, note: bool) -> list[dict[str, Any]]:
        """The chunks to send after judging: the allowed calls (renumbered), the note, and the
        finishing chunk (finish_reason `tool_calls` only when a call is left) carrying the
        verdicts in `policyengine.tool_calls`."""
        calls = self.calls()
        base = {k: v for k, v in finished.items() if k not in ("choices", "usage")}
        kept = [tc for tc, v in zip(calls, verdicts, strict=True) if v.effect == "allow"]
        out = []
        if kept:
            out.append({**base, "choices": [{"index": 0, "delta": {"tool_calls": [
                {"index": j, **tc} for j, tc in enumerate(kept)]}, "finish_reason": None}]})
        if note and len(kept) < len(calls):
            out.append({**base, "choices": [{"index": 0, "delta": {"content": _note(verdicts)},
                                             "finish_reason": None}]})
        ch = dict(finished["choices"][0])
        ch["finish_reason"] = "tool_calls" if kept else "stop"
        out.append({**finished, "choices": [ch], "policyengine": {"tool_calls": [v.as_json() for v in verdicts]}})
        return out
