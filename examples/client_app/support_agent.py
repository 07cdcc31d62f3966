"""A support agent whose tools are guarded by the policy's standing orders.

The agent works through support tickets. What it may do on its own, what waits
for a human and what it may never do is not in this file: it is in the policy
(`policyengine/demo/policies/standing-orders.policy`), enforced by the service:

  * classify_ticket, draft_response, refunds up to £100   -> run at once
  * refunds over £100, send_email                         -> held until a reviewer approves
  * a draft that mentions litigation / an angry customer  -> escalated to a human, never sent
  * delete_account                                        -> denied, the tool never runs

Run it against a service (see README.md):

    PE_API_KEY=... python examples/client_app/support_agent.py --url http://127.0.0.1:8000

Each guarded tool is an ordinary async function; `@pe.guard(...)` asks the
policy first, waits for the approval when the call is held (long poll), and
runs the *approved* arguments (a reviewer may have edited them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policyengine.client import (
    ActionDenied,
    ApprovalNotGranted,
    ApprovalWaitTimeout,
    PolicyEngineClient,
    PolicyEngineError,
)

HERE = Path(__file__).resolve().parent


@dataclass
class Ledger:
    """Where the agent's side effects land (a real app would call its payment/CRM APIs)."""

    refunds: list[dict[str, Any]] = field(default_factory=list)
    emails: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


@dataclass
class Ticket:
    id: str
    customer: str
    text: str
    refund: str | None = None  # e.g. "150 GBP"
    order: str | None = None
    delete_account: bool = False


@dataclass
class Outcome:
    ticket: str
    steps: list[str] = field(default_factory=list)

    def log(self, line: str) -> None:
        self.steps.append(line)


class SupportAgent:
    def __init__(self, pe: PolicyEngineClient, *, actor: str = "support-agent-7",
                 approval_timeout: float = 3600.0) -> None:
        self.pe = pe
        self.actor = actor
        self.ledger = Ledger()

        @pe.guard("refund", actor=actor, timeout=approval_timeout)
        async def refund(order: str, amount: str) -> str:
            self.ledger.refunds.append({"order": order, "amount": amount})
            return f"refunded {amount} on order {order}"

        @pe.guard("send_email", actor=actor, timeout=approval_timeout)
        async def send_email(to: str, subject: str, body: str) -> str:
            self.ledger.emails.append({"to": to, "subject": subject, "body": body})
            return f"emailed {to}"

        @pe.guard("delete_account", actor=actor)
        async def delete_account(customer: str) -> str:
            self.ledger.deleted.append(customer)
            return f"deleted {customer}"

        self.refund, self.send_email, self.delete_account = refund, send_email, delete_account

    async def handle(self, t: Ticket) -> Outcome:
        out = Outcome(t.id)
        cls = await self.pe.evaluate("classify_ticket", actor=self.actor, text=t.text)
        out.log(f"classify_ticket: {cls.effect} (decision {cls.decision_id})")
        draft = await self.pe.evaluate("draft_response", actor=self.actor, text=t.text)
        if draft.effect != "allow":
            why = "; ".join(b for r in draft.rules if r.effect == draft.effect for b in r.because) or draft.effect
            out.log(f"draft_response: {draft.effect} -> handed to a human ({why}); approval {draft.approval_id}")
            return out  # a human takes this ticket: the agent does nothing else
        out.log(f"draft_response: allow (decision {draft.decision_id})")
        if t.refund and t.order:
            try:
                out.log(f"refund: {await self.refund(order=t.order, amount=t.refund)}")
            except ActionDenied as exc:
                out.log(f"refund: denied by policy ({exc})")
            except ApprovalNotGranted as exc:
                out.log(f"refund: not granted ({exc})")
            except ApprovalWaitTimeout as exc:
                out.log(f"refund: still waiting for a reviewer ({exc})")
        if t.delete_account:
            try:
                await self.delete_account(customer=t.customer)
            except ActionDenied as exc:
                out.log(f"delete_account: denied by policy, never ran ({exc})")
        return out


def load_tickets(path: Path) -> list[Ticket]:
    return [Ticket(**t) for t in json.loads(path.read_text())]


async def run(url: str, api_key: str, tickets: list[Ticket], approval_timeout: float) -> Ledger:
    async with PolicyEngineClient(url, api_key=api_key) as pe:
        agent = SupportAgent(pe, approval_timeout=approval_timeout)
        # tickets are independent: a refund waiting for a reviewer does not block the others
        outcomes = await asyncio.gather(*(agent.handle(t) for t in tickets))
        for o in outcomes:
            print(f"ticket {o.ticket}")
            for s in o.steps:
                print(f"  {s}")
        print(f"ledger: {json.dumps(agent.ledger.__dict__)}")
        return agent.ledger


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=os.environ.get("PE_URL", "http://127.0.0.1:8000"))
    ap.add_argument("--api-key-env", default="PE_API_KEY", help="env var holding the app's API key")
    ap.add_argument("--tickets", type=Path, default=HERE / "tickets.json")
    ap.add_argument("--approval-timeout", type=float, default=600.0, help="seconds to wait for reviewers")
    args = ap.parse_args(argv)
    key = os.environ.get(args.api_key_env)
    if not key:
        print(f"set {args.api_key_env} to an API key with the `app` role (policyengine keys create ...)",
              file=sys.stderr)
        return 2
    try:
        asyncio.run(run(args.url, key, load_tickets(args.tickets), args.approval_timeout))
    except PolicyEngineError as exc:
        print(f"policy service error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
