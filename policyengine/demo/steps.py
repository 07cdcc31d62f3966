"""The walkthrough: the article's patterns, each shown with real requests to the real service.

Every step makes HTTP requests to the running `policyengine serve`, compares
what came back with what the policy says must happen, and records the
decision ids so that anyone (and the demo's test) can check the outcome in the
decision log. A step never decides it passed from printed text.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from policyengine.approvals.signing import sign_reviewer
from policyengine.simulate.faults import Fault

from .fleet import DemoFleet
from .inbox import Inbox


@dataclass
class Call:
    """One request the demo made and what the service answered."""

    label: str
    status: int
    body: dict[str, Any]
    headers: httpx.Headers

    @property
    def decision_id(self) -> str | None:
        return self.headers.get("x-policyengine-decision-id") or _get(self.body, "decision_id") or \
            _get(self.body, "error", "decision_id")

    @property
    def model(self) -> str | None:
        return self.headers.get("x-policyengine-model")

    @property
    def attempts(self) -> str:
        return self.headers.get("x-policyengine-attempts", "")

    @property
    def tags(self) -> list[str]:
        return [t for t in self.headers.get("x-policyengine-tags", "").split(",") if t]

    @property
    def effect(self) -> str | None:
        return self.headers.get("x-policyengine-effect") or _get(self.body, "effect") or \
            _get(self.body, "error", "effect")

    @property
    def approval(self) -> dict[str, Any] | None:
        return _get(self.body, "approval") or _get(self.body, "error", "approval")


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict):
            return None
        d = d.get(p)
    return d


@dataclass
class Check:
    what: str  # the expectation, in words
    ok: bool
    observed: str


@dataclass
class StepResult:
    key: str
    title: str
    article: str  # the pattern of the article this step shows
    checks: list[Check] = field(default_factory=list)
    decisions: dict[str, str] = field(default_factory=dict)  # label -> decision id
    approvals: dict[str, str] = field(default_factory=dict)  # label -> approval id
    notes: list[str] = field(default_factory=list)  # where to look
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)

    def expect(self, what: str, ok: bool, observed: str) -> bool:
        self.checks.append(Check(what, bool(ok), observed))
        return bool(ok)

    def record(self, call: Call) -> Call:
        if call.decision_id:
            self.decisions[call.label] = call.decision_id
        return call

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "ok": self.ok, "error": self.error,
                "decisions": self.decisions, "approvals": self.approvals, "notes": self.notes,
                "checks": [{"what": c.what, "ok": c.ok, "observed": c.observed} for c in self.checks]}


@dataclass
class DemoContext:
    base_url: str
    tokens: dict[str, str]  # role -> bearer token (app, enterprise, power, reviewer)
    fleet: DemoFleet
    inbox: Inbox
    client: httpx.AsyncClient

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def chat(self, label: str, text: str, *, who: str = "app", use_case: str | None = None,
                   session: str | None = None, model: str = "auto", actor: str | None = None,
                   channel: str | None = None) -> Call:
        headers = self.auth(who)
        if channel:
            headers["X-PolicyEngine-Channel"] = channel
        if use_case:
            headers["X-PolicyEngine-Use-Case"] = use_case
        if session:
            headers["X-PolicyEngine-Session"] = session
        if actor:
            headers["X-PolicyEngine-Actor"] = actor
        body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 64}
        r = await self.client.post(f"{self.base_url}/v1/chat/completions", json=body, headers=headers)
        return Call(label, r.status_code, _json(r), r.headers)

    async def evaluate(self, label: str, action: dict[str, Any], *, who: str = "app") -> Call:
        r = await self.client.post(f"{self.base_url}/v1/evaluate", json=action, headers=self.auth(who))
        return Call(label, r.status_code, _json(r), r.headers)

    async def decision(self, decision_id: str) -> dict[str, Any]:
        r = await self.client.get(f"{self.base_url}/v1/decisions/{decision_id}", headers=self.auth("app"))
        return _json(r)


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        data = r.json()
    except ValueError:
        return {"_text": r.text[:500]}
    return data if isinstance(data, dict) else {"_json": data}


def _answer(call: Call) -> str:
    content = _get((call.body.get("choices") or [{}])[0], "message", "content") if call.body.get("choices") else None
    content = content or ""
    return content if len(content) <= 60 else content[:57] + "..."


def _where(ctx: DemoContext, call: Call) -> str:
    return f"GET {ctx.base_url}/v1/decisions/{call.decision_id}"


# ----------------------------------------------------------------------------- steps


async def step_routing(ctx: DemoContext) -> StepResult:
    res = StepResult("routing", "Use-case, tier and user-switchable routing",
                     "Step 2 B-D: code -> qwen-72b, summarisation -> gemma-27b, classification -> gemma-9b; "
                     "standard tier -> gemma-27b, internal tools -> the free local model; power users may pick "
                     "from an allowlist")
    cases = [
        ("code", dict(use_case="code"), "qwen-72b", "Write a Python function that validates a UK postcode."),
        ("summarisation", dict(use_case="summarisation"), "gemma-27b", "Summarise this ticket thread for the handover."),
        ("classification", dict(use_case="classification"), "gemma-9b", "Classify: 'my parcel never arrived'"),
        ("standard tier", dict(who="standard"), "gemma-27b", "Hello, where is my order?"),
        ("internal-tools channel", dict(channel="internal"), "gemma-9b", "Summarise yesterday's on-call log."),
        ("power user picks gemma-27b", dict(who="power", model="gemma-27b"), "gemma-27b", "Draft a reply, quickly."),
    ]
    for label, kw, want, text in cases:
        c = res.record(await ctx.chat(label, text, **kw))
        res.expect(f"{label} -> {want}", c.status == 200 and c.model == want,
                   f"HTTP {c.status}, answered by {c.model or '-'}: {_answer(c)!r}")
    models = await ctx.client.get(f"{ctx.base_url}/v1/models", headers=ctx.auth("power"))
    listed = [m.get("id") for m in _json(models).get("data") or []]
    res.expect("GET /v1/models shows a power user the allowlist they may pick from",
               models.status_code == 200 and set(listed) - {"auto"} == {"qwen-72b", "gemma-27b"},
               f"{listed} ('auto' = let the policy route)")
    c = res.record(await ctx.chat("power user picks kimi-large", "Use the long-context model.", who="power",
                                  model="kimi-large"))
    res.expect("a model outside the allowlist is refused (403)", c.status == 403,
               f"HTTP {c.status}: {(_get(c.body, 'error', 'message') or '')[:90]}")
    return res


async def step_failover(ctx: DemoContext) -> StepResult:
    res = StepResult("failover", "Failover that classifies errors, with key rotation",
                     "Step 3: a crashed engine (500) advances the chain; an expired key rotates to the next key "
                     "of the same model before failing over")
    kimi, qwen = ctx.fleet["kimi-large"], ctx.fleet["qwen-72b"]
    kimi.add_fault(Fault(kind="error", status=500, times=None))  # SIMULATED: the vLLM engine died
    qwen.expire_key(ctx.fleet.keys["DEMO_QWEN_KEY_1"])  # SIMULATED: key 1 expired
    res.notes.append("SIMULATED faults: kimi-large answers 500 'EngineCore encountered an issue' (vLLM's crash "
                     "body); qwen-72b rejects DEMO_QWEN_KEY_1 with 401")
    c = res.record(await ctx.chat("long-context request", "Read the attached 150-page contract and list the "
                                  "termination clauses.", use_case="long_context"))
    att = c.attempts
    res.expect("answered by the next model in the chain (qwen-72b)", c.status == 200 and c.model == "qwen-72b",
               f"HTTP {c.status}, answered by {c.model or '-'}")
    res.expect("kimi-large's 500 classified as failover", "kimi-large:500:failover" in att, att or "-")
    res.expect("expired key rotated: DEMO_QWEN_KEY_1 401, then DEMO_QWEN_KEY_2 200",
               "qwen-72b#DEMO_QWEN_KEY_1:401:failover" in att and "qwen-72b#DEMO_QWEN_KEY_2:200:ok" in att, att or "-")
    res.notes.append(_where(ctx, c))
    kimi.clear_faults()
    # fatal: a content-policy rejection must not be retried on, or sent to, any other model
    qwen.add_fault(Fault(kind="content_filter", times=1))  # SIMULATED: the provider's content filter
    before = ctx.fleet.calls("llama-managed")
    f = res.record(await ctx.chat("content-filtered request", "Write a scene with graphic violence.",
                                  use_case="code"))
    res.expect("a content-policy rejection fails fast: the upstream's 400 comes back, no fallback is asked",
               f.status == 400 and "qwen-72b" in f.attempts and "llama-managed" not in f.attempts
               and ctx.fleet.calls("llama-managed") == before,
               f"HTTP {f.status}, code {_get(f.body, 'error', 'code')}; {f.attempts}")
    qwen.clear_faults()
    return res


async def step_cooldown(ctx: DemoContext) -> StepResult:
    res = StepResult("cooldown", "Cooldown honouring Retry-After",
                     "Step 3: a 429 with Retry-After marks the model as cooling down; it is skipped, not retried, "
                     "for that long")
    g9 = ctx.fleet["gemma-9b"]
    g9.add_fault(Fault(kind="rate_limit", retry_after=30, times=None))  # SIMULATED: Ollama is saturated
    res.notes.append("SIMULATED fault: gemma-9b answers 429 with 'Retry-After: 30' to every request")
    before = ctx.fleet.calls("gemma-9b")
    c1 = res.record(await ctx.chat("first classification", "Classify: 'I want to change my address'",
                                   use_case="classification"))
    c2 = res.record(await ctx.chat("second classification", "Classify: 'the app crashes on login'",
                                   use_case="classification"))
    calls = ctx.fleet.calls("gemma-9b") - before
    res.expect("first request: gemma-9b 429 (retry class), answered by the fallback gemma-27b",
               c1.status == 200 and c1.model == "gemma-27b" and "gemma-9b:429:retry" in c1.attempts,
               f"HTTP {c1.status}, {c1.model or '-'}; {c1.attempts}")
    res.expect("second request: gemma-9b skipped while cooling down, gemma-27b answers",
               c2.status == 200 and c2.model == "gemma-27b" and "gemma-9b:skipped:cooldown" in c2.attempts,
               f"HTTP {c2.status}, {c2.model or '-'}; {c2.attempts}")
    res.expect("gemma-9b was called exactly once (no wasted retries while Retry-After: 30 > 10 s max wait)",
               calls == 1, f"the simulated gemma-9b saw {calls} request(s)")
    res.notes.append(_where(ctx, c2))
    g9.clear_faults()
    return res


async def step_session(ctx: DemoContext) -> StepResult:
    res = StepResult("session", "A session stays on its model",
                     "Step 3: session stickiness keeps a conversation on one model/key (warm KV cache), even after "
                     "the primary recovers")
    qwen = ctx.fleet["qwen-72b"]
    qwen.add_fault(Fault(kind="error", status=500, times=1))  # SIMULATED: one crash of the primary
    res.notes.append("SIMULATED fault: qwen-72b fails once with 500, then is healthy again")
    a1 = res.record(await ctx.chat("session A, turn 1", "Hi, I need help with my enterprise account.",
                                   who="enterprise", session="demo-session-A"))
    before = ctx.fleet.calls("qwen-72b")
    a2 = res.record(await ctx.chat("session A, turn 2", "It is about the invoice from last month.",
                                   who="enterprise", session="demo-session-A"))
    qwen_calls = ctx.fleet.calls("qwen-72b") - before
    b1 = res.record(await ctx.chat("session B, turn 1", "Hello, a new conversation.", who="enterprise",
                                   session="demo-session-B"))
    res.expect("turn 1: the primary crashed, gemma-27b answered and the session is pinned to it",
               a1.status == 200 and a1.model == "gemma-27b" and "qwen-72b" in a1.attempts,
               f"HTTP {a1.status}, {a1.model or '-'}; {a1.attempts}")
    res.expect("turn 2: same session, same model (gemma-27b), qwen-72b not even tried",
               a2.status == 200 and a2.model == "gemma-27b" and qwen_calls == 0,
               f"HTTP {a2.status}, {a2.model or '-'}; {a2.attempts}; qwen-72b calls {qwen_calls}")
    res.expect("a new session starts on the recovered primary (qwen-72b)",
               b1.status == 200 and b1.model == "qwen-72b", f"HTTP {b1.status}, {b1.model or '-'}; {b1.attempts}")
    return res


async def step_refund(ctx: DemoContext) -> StepResult:
    res = StepResult("refund", "A refund over £100 held, then approved through its review link",
                     "Step 4 A/C: standing orders: small refunds run alone; over £100 waits for a human, who "
                     "is notified and approves")
    small = res.record(await ctx.evaluate("refund £40", {
        "action": "refund", "actor": "support-agent-7", "fields": {"amount": "40 GBP", "order": "A-1000"}}))
    res.expect("a £40 refund is authorised autonomously", small.effect == "allow",
               f"HTTP {small.status}, effect {small.effect}")
    big = res.record(await ctx.evaluate("refund £150", {
        "action": "refund", "actor": "support-agent-7", "fields": {"amount": "150 GBP", "order": "A-1001"}}))
    approval_id = _get(big.approval, "approval_id")
    res.expect("a £150 refund is held for approval", big.effect == "require_approval" and bool(approval_id),
               f"HTTP {big.status}, effect {big.effect}, approval {approval_id or '-'}")
    if not approval_id:
        return res
    res.approvals["refund £150"] = approval_id
    # the agent waits for the outcome (long poll), as an application would
    waiter = asyncio.create_task(ctx.client.get(f"{ctx.base_url}/v1/approvals/{approval_id}", params={"wait": 60},
                                                headers=ctx.auth("app"), timeout=90))
    try:
        note = await ctx.inbox.wait_for(lambda p: _get(p, "approval", "approval_id") == approval_id
                                        and p.get("event") == "approval.request" and p.get("review_url"), 30)
    except TimeoutError:
        res.expect("the reviewers' webhook receives the notification with a review link", False,
                   f"nothing arrived within 30 s ({len(ctx.inbox.received)} other notifications, "
                   f"{len(ctx.inbox.rejected)} rejected)")
        waiter.cancel()
        return res
    link = note["review_url"]
    res.expect("the reviewers' webhook receives a signed notification with a review link", True, link)
    res.notes.append(f"review link (signed, expiring, single use): {link}")
    page = await ctx.client.get(link)
    res.expect("GET the link: a confirmation page (deciding needs a POST)",
               page.status_code == 200 and "approve" in page.text.lower(),
               f"HTTP {page.status_code}, {len(page.text)} bytes of HTML")
    # the link reached the reviewers through the webhook: the receiver vouches for who decides
    # (a signed reviewer identity, so the decision is recorded as that person, not as "webhook")
    reviewer = "rita@support.demo"
    token = unquote(urlsplit(link).path.rsplit("/", 1)[-1])
    post = await ctx.client.post(link, data={
        "decision": "approve", "reason": "Order A-1001 arrived damaged; refund agreed.", "reviewer": reviewer,
        "reviewer_signature": sign_reviewer(token, reviewer, ctx.inbox.secret or "")})
    res.expect("POST approve through the link", post.status_code == 200,
               f"HTTP {post.status_code}: {_title(post.text)}")
    again = await ctx.client.post(link, data={"decision": "approve", "reason": "again"})
    res.expect("the link cannot be used twice", again.status_code >= 400, f"HTTP {again.status_code}")
    try:
        waited = await asyncio.wait_for(waiter, 60)
        view = _json(waited)
    except (TimeoutError, httpx.HTTPError) as exc:
        view = {"state": f"long poll failed: {type(exc).__name__}"}
    res.expect("the waiting agent is released: approved", view.get("state") == "approved" and view.get("released"),
               f"state {view.get('state')}, released {view.get('released')}, by {view.get('decided_by') or '-'}")
    res.notes.append(f"GET {ctx.base_url}/v1/approvals/{approval_id}/audit (reviewer key) shows every transition")
    return res


def _title(html: str) -> str:
    m = re.search(r"<title>(.*?)</title>", html, re.S | re.I)
    return (m.group(1).strip() if m else html[:60]).replace("\n", " ")


async def step_litigation(ctx: DemoContext) -> StepResult:
    res = StepResult("litigation", "A litigation mention escalated (and the other escalation triggers)",
                     "Step 4 C: escalation triggers: the request mentions litigation, customer sentiment < 0.3, "
                     "model confidence < threshold")
    text = ("Thanks for the update. If the refund is not processed this week I will take legal action, and my "
            "solicitor will be in touch.")
    c = res.record(await ctx.evaluate("draft a reply to a litigious customer", {
        "action": "draft_response", "actor": "support-agent-7", "text": text}))
    hits = [r for r in c.body.get("rules") or [] if r.get("effect") == "escalate"]
    because = "; ".join(b for r in hits for b in r.get("because") or [])
    res.expect("draft_response (normally autonomous) is escalated to a human", c.effect == "escalate",
               f"HTTP {c.status}, effect {c.effect}")
    res.expect("the matching rule says which phrase matched the litigation lexicon",
               any("litigation" in (r.get("source") or "") for r in hits), because or "-")
    if c.approval:
        res.approvals["litigation escalation"] = c.approval.get("approval_id", "")
    benign = res.record(await ctx.evaluate("draft a normal reply", {
        "action": "draft_response", "actor": "support-agent-7",
        "text": "Thanks, the replacement arrived today and works perfectly."}))
    res.expect("an ordinary draft stays autonomous", benign.effect == "allow", f"effect {benign.effect}")
    angry = res.record(await ctx.evaluate("draft a reply to a furious customer", {
        "action": "draft_response", "actor": "support-agent-7",
        "text": "This is the third time you have ignored me. Your service is useless and I am furious."}))
    low = angry.body.get("signals", {}).get("sentiment")
    res.expect("a furious customer (sentiment < 0.3) is escalated too", angry.effect == "escalate",
               f"effect {angry.effect}, sentiment {low}")
    if angry.approval:
        res.approvals["sentiment escalation"] = angry.approval.get("approval_id", "")
    unsure = res.record(await ctx.evaluate("classify with low model confidence", {
        "action": "classify_ticket", "actor": "support-agent-7",
        "fields": {"ticket": "T-77", "category": "billing", "confidence": 0.55}}))
    res.expect("a classification the model is unsure of (confidence 0.55 < 0.7) is escalated",
               unsure.effect == "escalate", f"effect {unsure.effect}, "
               f"confidence {unsure.body.get('signals', {}).get('confidence')}")
    return res


DIVERGENT = {
    "qwen-72b": "Yes. The customer must pay the £200 early-termination fee before cancelling; the clause "
                "is binding.",
    "gemma-27b": "Yes. The customer must pay a £50 early-termination fee before cancelling; the clause is "
                 "binding.",
}
ALIGNED = {
    "qwen-72b": "The customer can return the item within 30 days of delivery for a full refund, as the "
                "Consumer Contracts Regulations require.",
    "gemma-27b": "Yes: a return within 30 days of delivery gets a full refund; that is what the Consumer "
                 "Contracts Regulations require.",
}


async def step_verification(ctx: DemoContext) -> StepResult:
    res = StepResult("verification", "Dual-model verification",
                     "Step 4 B: legal answers run through qwen-72b AND gemma-27b; diverging outputs go to a "
                     "human, aligned ones ship tagged high-confidence")
    res.notes.append("SIMULATED answers: the demo scripts what each simulated model says for these two questions")
    for name, text in DIVERGENT.items():
        ctx.fleet.set_answer(name, text)
    try:
        d = res.record(await ctx.chat("divergent legal answers", "Can the customer cancel without paying the "
                                      "early-termination fee?", use_case="legal"))
    finally:
        ctx.fleet.reset_answers()
    res.expect("diverging answers: escalated and held for review (409), not delivered",
               d.status == 409 and d.effect == "escalate",
               f"HTTP {d.status}, effect {d.effect}, approval {_get(d.approval, 'approval_id') or '-'}")
    if d.approval:
        res.approvals["divergent legal answers"] = d.approval.get("approval_id", "")
    for name, text in ALIGNED.items():
        ctx.fleet.set_answer(name, text)
    try:
        a = res.record(await ctx.chat("aligned legal answers", "Can the customer return the item for a refund?",
                                      use_case="legal"))
    finally:
        ctx.fleet.reset_answers()
    div = a.headers.get("x-policyengine-divergence", "-")
    res.expect("aligned answers: delivered with the high-confidence tag",
               a.status == 200 and "high-confidence" in a.tags,
               f"HTTP {a.status}, tags {a.tags or '-'}, divergence {div}, answered by {a.model or '-'}")
    if d.decision_id:
        res.notes.append(f"{_where(ctx, d)}  (divergence and both answers are in the log entry)")
    return res


DRAFTS = ("Happy to help! Here is how to reset your password.",
          "Thank you for the lovely feedback about our delivery team.",
          "Your order has shipped and will arrive tomorrow. Thanks for shopping with us!")


def _day_of_tickets() -> list[tuple[dict[str, Any], str]]:
    """A scripted support shift: (action, the effect the standing orders give it)."""
    day: list[tuple[dict[str, Any], str]] = []
    day += [({"action": "classify_ticket", "fields": {"ticket": f"T-{i}"}}, "allow") for i in range(13)]
    day += [({"action": "draft_response", "text": DRAFTS[i % 3]}, "allow") for i in range(12)]
    day += [({"action": "route_department", "fields": {"department": d}}, "allow")
            for d in ("billing", "returns", "tech", "billing", "sales", "returns")]
    day += [({"action": "refund", "fields": {"amount": a, "order": f"B-{i}"}}, "allow")
            for i, a in enumerate(("15 GBP", "25 GBP", "60 GBP", "99.99 GBP"))]
    day += [({"action": "refund", "fields": {"amount": a, "order": f"C-{i}"}}, "require_approval")
            for i, a in enumerate(("120 GBP", "480 GBP"))]
    day += [({"action": "send_email", "fields": {"to": "press@paper.example"}}, "require_approval"),
            ({"action": "escalate_legal", "fields": {"case": "K-7"}}, "require_approval"),
            ({"action": "respond_press", "fields": {"outlet": "Daily Example"}}, "require_approval")]
    return day


def _decisions_metric(text: str) -> dict[str, float]:
    """`policyengine_decisions_total{effect=..., kind="evaluate"}` from a /metrics scrape."""
    out: dict[str, float] = {}
    for m in re.finditer(r'^policyengine_decisions_total\{([^}]*)\} ([0-9.e+]+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if labels.get("kind") == "evaluate":
            out[labels.get("effect", "")] = out.get(labels.get("effect", ""), 0.0) + float(m.group(2))
    return out


async def step_autonomy(ctx: DemoContext) -> StepResult:
    res = StepResult("autonomy", "Standing orders at volume",
                     "Step 4 C: the standing-orders pattern lets the system handle most of the volume "
                     "autonomously and routes the edge cases to humans")
    before = _decisions_metric((await ctx.client.get(f"{ctx.base_url}/metrics")).text)
    day = _day_of_tickets()
    calls = await asyncio.gather(*(ctx.evaluate(f"shift #{i:02d} {a['action']}", {**a, "actor": "support-agent-7"})
                                   for i, (a, _) in enumerate(day)))
    for c in calls:
        res.record(c)
    wrong = [f"{a['action']} {a.get('fields', '')}: {c.effect} (want {want})"
             for (a, want), c in zip(day, calls, strict=True) if c.effect != want]
    res.expect(f"each of {len(day)} actions gets the effect its standing order gives", not wrong,
               "; ".join(wrong[:3]) or "all as written in standing-orders.policy")
    held = [c for c in calls if c.effect in ("require_approval", "escalate")]
    res.expect("every held action has an approval waiting for a reviewer",
               all(_get(c.approval, "approval_id") for c in held), f"{len(held)} held")
    auto = sum(c.effect == "allow" for c in calls)
    after = _decisions_metric((await ctx.client.get(f"{ctx.base_url}/metrics")).text)
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    res.expect("/metrics counts the same shift (policyengine_decisions_total by effect)",
               round(delta.get("allow", 0)) == auto and round(sum(delta.values())) == len(day),
               f"metrics: {', '.join(f'{k} +{v:g}' for k, v in sorted(delta.items()) if v)}")
    res.notes.append(f"handled autonomously: {auto}/{len(day)} ({100 * auto / len(day):.1f}%), held for a human: "
                     f"{len(held)} (a scripted shift, not a measurement)")
    res.notes.append(f"GET {ctx.base_url}/metrics  -> policyengine_decisions_total{{effect, kind}}")
    return res


async def step_spot(ctx: DemoContext) -> StepResult:
    res = StepResult("spot", "Spot capacity reclaimed: the managed fallback answers",
                     "Step 5: self-hosted models (cost 0) first, a pay-per-token managed endpoint (Bedrock in "
                     "production) for when Spot capacity is reclaimed")
    qwen = ctx.fleet["qwen-72b"]
    qwen.down(4.0)  # SIMULATED: the Spot node is gone; connections are refused for 4 s
    res.notes.append("SIMULATED: qwen-72b's server stops listening for 4 s, as when AWS reclaims a Spot node")
    await asyncio.sleep(0.2)
    c = res.record(await ctx.chat("code request during the reclaim", "Refactor this function to be async.",
                                  use_case="code"))
    res.expect("answered by the managed fallback (llama-managed, cost > 0) after a failover",
               c.status == 200 and c.model == "llama-managed" and "qwen-72b" in c.attempts
               and ":failover" in c.attempts, f"HTTP {c.status}, {c.model or '-'}; {c.attempts}")
    usage = c.body.get("usage") or {}
    res.notes.append(f"the fallback is paid per token: {usage.get('total_tokens', '?')} tokens at "
                     "0.00265 per 1k (policyengine/demo/policies/fleet.policy)")
    await asyncio.sleep(4.2)  # the node comes back
    back = res.record(await ctx.chat("code request after recovery", "And now add type hints.", use_case="code"))
    res.expect("once capacity is back, the self-hosted model answers again",
               back.status == 200 and back.model == "qwen-72b", f"HTTP {back.status}, {back.model or '-'}")
    return res


STEPS: list[Callable[[DemoContext], Awaitable[StepResult]]] = [
    step_routing, step_failover, step_cooldown, step_session, step_refund, step_litigation, step_verification,
    step_spot, step_autonomy,
]
