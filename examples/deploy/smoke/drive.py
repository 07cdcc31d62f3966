"""Drive the running compose stack the way its users would, and check every step from the log.

Run by examples/deploy/smoke.sh on the host, with the real `openai` SDK as the application:

    python drive.py --base http://127.0.0.1:18080 --replica http://127.0.0.1:18001 \
        --replica http://127.0.0.1:18002 --fleet qwen=http://127.0.0.1:19001 \
        --fleet gemma=http://127.0.0.1:19002 --mail-cmd "docker-compose ... logs --no-color mail"

Tokens come from the environment (SMOKE_APP_TOKEN, SMOKE_ADMIN_TOKEN), never from arguments.
Each step prints what it checked; the exit status is 0 only when every check held. The
simulated fleet is the `fleet` service (policyengine simulate): its admin API injects the faults.
"""

from __future__ import annotations

import argparse
import base64
import email
import email.policy
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai

QWEN, GEMMA = "qwen-72b", "gemma-9b"


@dataclass
class Checks:
    """Every check made, in order; `ok` only if all held."""

    failed: list[str] = field(default_factory=list)
    count: int = 0

    def expect(self, what: str, ok: bool, observed: Any) -> bool:
        self.count += 1
        print(f"  [{'ok' if ok else 'FAIL'}] {what}: {observed}", flush=True)
        if not ok:
            self.failed.append(what)
        return ok


@dataclass
class Stack:
    """Where everything is, and the clients that talk to it."""

    base: str
    replicas: list[str]
    fleet: dict[str, str]
    mail_cmd: str
    app: str
    admin: str
    http: httpx.Client

    def openai(self, base: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{base or self.base}/v1", api_key=self.app, max_retries=0, timeout=60)

    def chat(self, text: str, *, base: str | None = None, use_case: str | None = None) -> tuple[int, dict, Any]:
        """One chat through the openai SDK: (status, headers, completion or error body)."""
        headers = {"X-PolicyEngine-Use-Case": use_case} if use_case else {}
        try:
            raw = self.openai(base).chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": text}], max_tokens=32, extra_headers=headers)
            return raw.status_code, dict(raw.headers), raw.parse()
        except openai.APIStatusError as exc:
            return exc.status_code, dict(exc.response.headers), exc.body

    def decision(self, decision_id: str, *, outcome: bool = False) -> dict[str, Any]:
        """The decision as the log has it (GET /v1/decisions/{id} with the app key). With `outcome`,
        wait (up to 15 s) for a chat's outcome row: it is committed after the answer is sent."""
        deadline = time.monotonic() + 15
        while True:
            r = self.http.get(f"{self.base}/v1/decisions/{decision_id}", headers={"Authorization": f"Bearer {self.app}"})
            r.raise_for_status()
            row = r.json()
            if not outcome or row.get("outcome_row") or time.monotonic() > deadline:
                return row
            time.sleep(0.3)

    def sim(self, name: str, path: str, body: Any = None) -> Any:
        url = f"{self.fleet[name]}/_sim/{path}"
        r = self.http.post(url, json=body) if body is not None else self.http.get(url)
        r.raise_for_status()
        return r.json() if r.content else None

    def sim_calls(self, name: str) -> int:
        return len(self.sim(name, "requests") or [])

    def mails(self) -> list[email.message.EmailMessage]:
        out = subprocess.run(self.mail_cmd, shell=True, capture_output=True, text=True, check=False).stdout
        msgs = []
        for line in out.splitlines():
            start = line.find('{"mail"')
            if start < 0:
                continue
            raw = base64.b64decode(json.loads(line[start:])["mail"]["raw_b64"])
            msgs.append(email.message_from_bytes(raw, policy=email.policy.default))
        return msgs


def _attempts(h: dict) -> str:
    return h.get("x-policyengine-attempts", "")


def _has(attempts: str, model: str, rest: str) -> bool:
    """Whether the attempts header has `model[#KEY]:rest[:reason]` (e.g. `qwen-72b#QWEN_KEY_1:500:failover:...`)."""
    return re.search(rf"(^|, ){re.escape(model)}(#[A-Za-z0-9_]+)?:{re.escape(rest)}(:|,|$)", attempts) is not None


def _logged_attempts(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat's attempts as logged: on its decision row, or on the outcome row that follows it."""
    rec = row.get("record") or {}
    return rec.get("attempts") or ((row.get("outcome_row") or {}).get("record") or {}).get("attempts") or []


def _answered_by(row: dict[str, Any]) -> str | None:
    """The model that answered: the decision row is committed before the call (no model yet), its
    outcome row names the model."""
    return (row.get("outcome_row") or {}).get("model") or row.get("model")


def _text_of(msg: email.message.EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    return part.get_content() if part is not None else ""


def step_routing(s: Stack, c: Checks) -> None:
    print("routing: the policy picks the model; the application asks for `auto`")
    st, h, _ = s.chat("Hello, where is my order?")
    c.expect("default route answered by qwen-72b", st == 200 and h.get("x-policyengine-model") == QWEN,
             f"HTTP {st}, model {h.get('x-policyengine-model')}")
    row = s.decision(h["x-policyengine-decision-id"], outcome=True)
    c.expect("the log has the decision: allow, answered by qwen-72b",
             row.get("effect") == "allow" and _answered_by(row) == QWEN,
             f"effect {row.get('effect')}, model {_answered_by(row)}")
    st, h, _ = s.chat("Summarise this ticket: the parcel arrived late.", use_case="summarisation")
    c.expect("use_case summarisation routed to gemma-9b", st == 200 and h.get("x-policyengine-model") == GEMMA,
             f"HTTP {st}, model {h.get('x-policyengine-model')}")
    row = s.decision(h["x-policyengine-decision-id"], outcome=True)
    c.expect("the log says gemma-9b answered it", _answered_by(row) == GEMMA, f"model {_answered_by(row)}")


def step_failover(s: Stack, c: Checks) -> None:
    print("failover: qwen-72b's engine dies (vLLM's 500 crash body); the chain moves on")
    s.sim("qwen", "faults", {"kind": "error", "status": 500, "times": None})
    try:
        st, h, _ = s.chat("Can you check my invoice?")
    finally:
        s.sim("qwen", "reset", {})
    att = _attempts(h)
    c.expect("answered by the fallback gemma-9b", st == 200 and h.get("x-policyengine-model") == GEMMA,
             f"HTTP {st}, model {h.get('x-policyengine-model')}")
    c.expect("qwen-72b's 500 classified failover", _has(att, QWEN, "500:failover"), att)
    row = s.decision(h["x-policyengine-decision-id"], outcome=True)
    logged = [f"{a.get('model')}:{a.get('status')}:{a.get('error_class') or 'ok'}" for a in _logged_attempts(row)]
    c.expect("the log records both attempts", f"{QWEN}:500:failover" in logged and f"{GEMMA}:200:ok" in logged,
             logged or row.get("explanation"))


def step_cooldown(s: Stack, c: Checks) -> None:
    print("cooldown: gemma-9b answers 429 Retry-After: 30; both replicas skip it (shared through Redis)")
    s.sim("gemma", "faults", {"kind": "rate_limit", "retry_after": 30, "times": None})
    try:
        before = s.sim_calls("gemma")
        st, h, _ = s.chat("Summarise: the router reboots every night.", use_case="summarisation")
        att = _attempts(h)
        c.expect("first request: gemma-9b 429, answered by qwen-72b", st == 200 and
                 h.get("x-policyengine-model") == QWEN and _has(att, GEMMA, "429:retry"), f"HTTP {st}; {att}")
        for i, replica in enumerate(s.replicas, 1):
            st, h, _ = s.chat("Summarise: the bill doubled.", base=replica, use_case="summarisation")
            att = _attempts(h)
            c.expect(f"replica {i} (asked directly) skips gemma-9b: cooling down", st == 200 and
                     _has(att, GEMMA, "skipped:cooldown") and h.get("x-policyengine-model") == QWEN, f"HTTP {st}; {att}")
            row = s.decision(h["x-policyengine-decision-id"])
            c.expect(f"replica {i}'s decision is in the shared log", row.get("id") == h["x-policyengine-decision-id"],
                     row.get("id"))
        c.expect("gemma-9b was called once in all (no wasted retries while it cools down)",
                 s.sim_calls("gemma") - before == 1, f"{s.sim_calls('gemma') - before} call(s)")
    finally:
        s.sim("gemma", "reset", {})
    admin = {"Authorization": f"Bearer {s.admin}"}
    fleet = s.http.get(f"{s.base}/v1/fleet", headers=admin).json()
    gemma = next(m for m in fleet["models"] if m["name"] == GEMMA)
    scopes = [cd["scope"] for d in gemma["deployments"] for cd in d["cooldowns"]]
    c.expect("GET /v1/fleet shows gemma-9b cooling down", bool(scopes) and gemma["status"] != "available",
             f"status {gemma['status']}, cooldowns {scopes}")
    codes = [s.http.post(f"{s.base}/v1/fleet/cooldowns/clear", json={"scope": sc}, headers=admin).status_code
             for sc in scopes]
    c.expect("an admin clears its cooldowns through the fleet API", codes and set(codes) == {200}, codes)
    st, h, _ = s.chat("Summarise: all good now.", use_case="summarisation")
    c.expect("gemma-9b serves again at once", st == 200 and h.get("x-policyengine-model") == GEMMA,
             f"HTTP {st}, model {h.get('x-policyengine-model')}")


def step_refund(s: Stack, c: Checks) -> None:
    print("standing orders: a refund over 100 GBP waits for a human, who approves through the emailed link")
    auth = {"Authorization": f"Bearer {s.app}"}
    small = s.http.post(f"{s.base}/v1/evaluate", headers=auth, json={
        "action": "refund", "actor": "support-agent-7", "fields": {"amount": "40 GBP", "order": "A-1000"}}).json()
    c.expect("a 40 GBP refund runs alone", small.get("effect") == "allow", small.get("effect"))
    r = s.http.post(f"{s.base}/v1/evaluate", headers=auth, json={
        "action": "refund", "actor": "support-agent-7", "fields": {"amount": "150 GBP", "order": "A-1001"}})
    big = r.json()
    approval_id = (big.get("approval") or {}).get("approval_id")
    c.expect("a 150 GBP refund is held", big.get("effect") == "require_approval" and bool(approval_id),
             f"effect {big.get('effect')}, approval {approval_id}")
    if not approval_id:
        return
    link = None
    deadline = time.monotonic() + 60
    while link is None and time.monotonic() < deadline:
        for msg in s.mails():
            m = re.search(r"https?://\S+/review/[A-Za-z0-9._~%-]+", _text_of(msg))
            if m and approval_id in (str(msg["subject"]) + _text_of(msg)):
                link = m.group(0)
        if link is None:
            time.sleep(1)
    c.expect("the reviewers' email arrived with a signed review link", link is not None, link or "no mail in 60 s")
    if link is None:
        return
    page = s.http.get(link)
    c.expect("the link opens a confirmation page", page.status_code == 200 and "approve" in page.text.lower(),
             f"HTTP {page.status_code}")
    post = s.http.post(link, data={"decision": "approve", "reason": "Order A-1001 arrived damaged."})
    c.expect("approve through the link", post.status_code == 200, f"HTTP {post.status_code}")
    again = s.http.post(link, data={"decision": "approve", "reason": "twice"})
    c.expect("the link cannot be used twice", again.status_code >= 400, f"HTTP {again.status_code}")
    view = s.http.get(f"{s.base}/v1/approvals/{approval_id}", params={"wait": 10}, headers=auth, timeout=30).json()
    c.expect("the waiting agent sees it approved", view.get("state") == "approved",
             f"state {view.get('state')}, decided by {view.get('decided_by')}")
    row = s.decision(big["decision_id"])
    c.expect("the log holds the held decision with its approval", row.get("effect") == "require_approval",
             f"effect {row.get('effect')}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="nginx in front of the replicas")
    p.add_argument("--replica", action="append", required=True, help="one replica, directly (repeat)")
    p.add_argument("--fleet", action="append", required=True, help="NAME=ADMIN_URL of a simulated model")
    p.add_argument("--mail-cmd", required=True, help="a shell command printing the SMTP sink's log")
    a = p.parse_args()
    s = Stack(base=a.base.rstrip("/"), replicas=[r.rstrip("/") for r in a.replica],
              fleet=dict(f.split("=", 1) for f in a.fleet), mail_cmd=a.mail_cmd,
              app=os.environ["SMOKE_APP_TOKEN"], admin=os.environ["SMOKE_ADMIN_TOKEN"],
              http=httpx.Client(timeout=60))
    c = Checks()
    for step in (step_routing, step_failover, step_cooldown, step_refund):
        try:
            step(s, c)
        except Exception as exc:  # a step that crashes is a failed check, and the others still run
            c.expect(f"{step.__name__} ran", False, f"{type(exc).__name__}: {exc}")
    print(f"{c.count - len(c.failed)}/{c.count} checks held" + (f"; FAILED: {c.failed}" if c.failed else ""))
    return 0 if not c.failed else 1


if __name__ == "__main__":
    sys.exit(main())
