"""A tool-calling agent whose model talks to the policyengine gateway (the `openai` SDK).

The model is offered two tools, `lookup_order` and `refund`. It proposes calls; the gateway
judges each against the standing orders (`agent.policy` here) before the answer reaches
this agent:

  * lookup_order, a refund up to £100  -> in `message.tool_calls`: run at once
  * refund(£150)                       -> held: removed from `tool_calls`, listed in
                                          `policyengine.tool_calls` with its approval id
  * delete_account                     -> denied: the agent never sees it as runnable

For a held call the agent prints the approval id and waits (long poll) while a reviewer
decides through the notification (the signed link in the email / Slack message). Approved:
it runs the *approved* call (a reviewer may have edited the amount; the edit was evaluated
against the policy again) exactly once, and hands the result back to the model, which
writes the final answer. Rejected or timed out: the refund never runs and the model is told
so.

    PE_API_KEY=... python examples/tool_agent/agent.py --url http://127.0.0.1:8000 \\
        "Order A1 arrived broken. Please refund the £150 I paid."

See README.md beside this file for the service, the policy and the reviewer's side.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

import openai

from policyengine.client import (
    ApprovalNotGranted,
    ApprovalWaitTimeout,
    PolicyEngineClient,
    PolicyEngineError,
    ToolCall,
    ToolVerdict,
    assistant_message,
    tool_refused_message,
    tool_result_message,
    tool_verdicts,
)

SYSTEM = ("You are the support agent of a small shop. Look orders up with lookup_order and refund "
          "them with refund (amount and currency as on the order). Some actions need a human's "
          "approval; when a tool reports it was not run, tell the customer so.")

TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "lookup_order", "description": "The order: items, amount paid, status.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                       "required": ["order_id"]}}},
    {"type": "function", "function": {
        "name": "refund", "description": "Refund an order (all or part of what was paid).",
        "parameters": {"type": "object", "properties": {
            "order_id": {"type": "string"},
            "amount": {"type": "number", "description": "e.g. 150"},
            "currency": {"type": "string", "description": "ISO 4217, e.g. GBP"}},
            "required": ["order_id", "amount", "currency"]}}},
]


@dataclass
class Shop:
    """The agent's side effects (a real agent would call its order and payment APIs)."""

    orders: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "A1": {"order_id": "A1", "item": "espresso machine", "paid": "150.00 GBP", "status": "delivered, damaged"}})
    refunds: list[dict[str, Any]] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)

    def lookup_order(self, order_id: str) -> dict[str, Any]:
        """The order, or an error naming the unknown id (appends the id to `lookups`)."""
        self.lookups.append(order_id)
        return self.orders.get(order_id) or {"error": f"no order {order_id}"}

    def refund(self, order_id: str, amount: float | int | str, currency: str | None = None) -> dict[str, Any]:
        """Pay the refund (appends to `refunds`, with the monotonic time it ran)."""
        value, cur = _money(amount, currency)
        ref = {"refund_id": f"R-{uuid.uuid4().hex[:8]}", "order_id": order_id, "amount": value, "currency": cur,
               "at": time.monotonic()}
        self.refunds.append(ref)
        return {"refund_id": ref["refund_id"], "status": "refunded", "amount": f"{value} {cur}"}


def _money(amount: float | int | str, currency: str | None) -> tuple[Decimal, str]:
    """(value, currency) from 150 + "GBP" or "150 GBP"; ValueError for anything else."""
    if isinstance(amount, str):
        parts = amount.split()
        if len(parts) == 2 and currency in (None, parts[1]):
            amount, currency = parts[0], parts[1]
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        raise ValueError(f"not an amount: {amount!r}") from None
    if not currency or len(currency) != 3 or not value.is_finite() or value <= 0:
        raise ValueError(f"not a refundable amount: {amount!r} {currency!r}")
    return value, currency.upper()


OnHeld = Callable[[ToolVerdict], Awaitable[None] | None]


class ToolAgent:
    """One conversation with the model through the gateway; tool calls run only as the policy says.

    A held call is run after, and as, a reviewer approved it, at most once; a denied, rejected
    or timed-out one never runs (the model gets a tool message saying so). The calls of one
    answer that need no reviewer run first; the held ones wait together. `on_held(verdict)`
    is called (and awaited, when async) as soon as a call is held, before the wait.
    """

    def __init__(self, llm: openai.AsyncOpenAI, pe: PolicyEngineClient, shop: Shop | None = None, *,
                 model: str = "auto", session: str | None = None, approval_timeout: float = 8 * 3600,
                 max_turns: int = 6, on_held: OnHeld | None = None, log: Callable[[str], None] = print) -> None:
        self.llm, self.pe = llm, pe
        self.shop = shop or Shop()
        self.model, self.session = model, session or f"tool-agent-{uuid.uuid4().hex[:8]}"
        self.approval_timeout, self.max_turns = approval_timeout, max_turns
        self.on_held, self.log = on_held, log
        self.tools: dict[str, Callable[..., Any]] = {"lookup_order": self.shop.lookup_order,
                                                     "refund": self.shop.refund}

    async def run(self, question: str) -> str:
        """Ask, run the tool calls the policy lets through, and return the model's final answer."""
        messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM},
                                          {"role": "user", "content": question}]
        for _ in range(self.max_turns):
            completion = await self.llm.chat.completions.create(
                model=self.model, messages=messages, tools=TOOLS,  # type: ignore[arg-type]
                extra_headers={"X-PolicyEngine-Session": self.session})
            verdicts = tool_verdicts(completion)  # raises when the answer did not come through the gateway
            if not verdicts:
                return completion.choices[0].message.content or ""
            # the calls that need no reviewer first, then the held ones, each waiting on its own approval
            # (concurrently); the history keeps the model's order
            now = {i: await self._settle(v) for i, v in enumerate(verdicts) if not v.held}
            held = [i for i, v in enumerate(verdicts) if v.held]
            later = dict(zip(held, await asyncio.gather(*(self._settle(verdicts[i]) for i in held)), strict=True))
            done = [{**now, **later}[i] for i in range(len(verdicts))]
            messages.append(assistant_message(completion, [call for call, _ in done]))
            messages.extend(msg for _, msg in done)
        raise RuntimeError(f"no final answer after {self.max_turns} turns")

    async def _settle(self, v: ToolVerdict) -> tuple[ToolCall, dict[str, Any]]:
        """(the call for the history, its tool message): run it, or say why it was not run."""
        if v.denied:
            self.log(f"  {v.name}: denied by policy ({v.reason})")
            return v.call(), tool_refused_message(v)
        if v.allowed:
            return await self._run(v.call())
        self.log(f"  {v.name}{v.arguments}: held for a reviewer, approval {v.approval_id} ({v.reason})")
        if self.on_held is not None:
            out = self.on_held(v)
            if inspect.isawaitable(out):
                await out
        try:
            call = await self.pe.wait_for_tool_call(v, timeout=self.approval_timeout)
        except ApprovalNotGranted as exc:
            self.log(f"  {v.name}: {exc}; not run")
            return v.call(), tool_refused_message(v, str(exc))
        except ApprovalWaitTimeout as exc:
            self.log(f"  {v.name}: {exc}; not run, approval withdrawn")
            try:  # nobody should approve a call the agent no longer waits for
                await self.pe.cancel_approval(exc.approval_id, reason="the agent stopped waiting")
            except PolicyEngineError as err:
                if err.status != 409:
                    raise
                return await self._decided_meanwhile(v)
            return v.call(), tool_refused_message(v, f"no reviewer decided in time ({exc})")
        by = call.approval.decided_by if call.approval else None
        self.log(f"  {v.name}: approved by {by}" + (f", edited to {call.arguments}" if call.edited else ""))
        return await self._run(call)

    async def _decided_meanwhile(self, v: ToolVerdict) -> tuple[ToolCall, dict[str, Any]]:
        """A reviewer decided between the end of the wait and the withdrawal: follow their decision."""
        try:
            call = await self.pe.wait_for_tool_call(v, timeout=5)
        except ApprovalNotGranted as exc:
            return v.call(), tool_refused_message(v, str(exc))
        return await self._run(call)

    async def _run(self, call: ToolCall) -> tuple[ToolCall, dict[str, Any]]:
        fn = self.tools.get(call.name)
        if fn is None:
            return call, tool_result_message(call, {"error": f"this agent has no tool {call.name}"})
        try:
            inspect.signature(fn).bind(**call.arguments)
        except TypeError as exc:
            return call, tool_result_message(call, {"error": f"not run: bad arguments for {call.name}: {exc}"})
        try:
            result = fn(**call.arguments)
        except ValueError as exc:
            result = {"error": str(exc)}
        self.log(f"  ran {call.name}({call.arguments}) -> {result}")
        return call, tool_result_message(call, result)


async def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("question", nargs="?", default="Order A1 arrived broken. Please refund the £150 I paid.")
    ap.add_argument("--url", default=os.environ.get("PE_URL", "http://127.0.0.1:8000"))
    ap.add_argument("--approval-timeout", type=float, default=8 * 3600, help="seconds to wait for a reviewer")
    args = ap.parse_args(argv)
    key = os.environ.get("PE_API_KEY")
    if not key:
        print("set PE_API_KEY to an app key of the service (policyengine keys create --role app ...)", file=sys.stderr)
        return 2
    llm = openai.AsyncOpenAI(base_url=args.url.rstrip("/") + "/v1", api_key=key, max_retries=1)
    async with PolicyEngineClient(args.url, api_key=key) as pe:
        try:
            answer = await ToolAgent(llm, pe, approval_timeout=args.approval_timeout).run(args.question)
        finally:
            await llm.close()
    print(f"\n{answer}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
