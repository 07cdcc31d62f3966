"""Execute a Decision's model chain: retry, failover, fail fast, cooldowns, breakers, stickiness.

Per request: candidates are the routing chain (sticky model first when the
session is pinned, self-hosted first when the policy prefers it); a candidate is
skipped while cooling down, while its breaker is open, or when its context
window is known to be too small. Each (model, key) is tried up to
`max_attempts` times for retry-class errors; failover-class errors move to the
next key (credential problems) or the next model, after `Classification.retries`
more tries on the same target (a generic 500: one); a fatal error stops at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, TypeVar

from policyengine.adapters.base import Adapter, CallOptions, TransportError, UpstreamError
from policyengine.adapters.classify import (
    CAPABILITY_REASONS,
    CONTEXT_REASONS,
    Classification,
    Classifier,
    ClassifierRule,
    decode_body,
    load_rules,
)
from policyengine.adapters.http import make_client
from policyengine.errors import Location
from policyengine.fastmodel import construct
from policyengine.netcheck import (
    OutboundPolicy,
    OutboundRefused,
    OutboundUnresolved,
    rules_from_env,
)
from policyengine.state import StateStore, StickyEntry, key_scope, model_scope
from policyengine.types import EnvRef, ModelSpec, Routing

from .balance import Balancer, Target, targets_of
from .chain import Budget, Call, Run
from .hedge import HedgeBudget
from .results import Attempt, DispatchError, DispatchResult
from .safe_state import SafeState, log
from .settings import DispatchSettings
from .stream import DispatchStream
from .tokens import estimate_prompt_tokens, requested_output_tokens

T = TypeVar("T")

_QUOTA_REASONS = frozenset({"quota_exhausted"})
_AUTH_REASONS = frozenset({"auth_invalid", "auth_expired", "permission_denied"})
# transport failures that mean the deployment is gone (reclaimed, crashed): no request reached a model
_DRAIN_REASONS = frozenset({"connection_refused", "connection_reset", "connect_error", "connect_timeout"})
_NO_BREAKER_REASONS = frozenset({"rate_limited", *CONTEXT_REASONS, *CAPABILITY_REASONS, *_AUTH_REASONS,
                                 *_QUOTA_REASONS, "key_missing", "request_too_large"})


class ChainDispatcher:
    """Runs a policy's model chain with retry, failover and fail-fast (see the module docstring).

    `complete` returns a `DispatchResult` or raises `DispatchError`; `stream` returns a
    `DispatchStream`. Every call, skip and failure of a request is in its attempts, in order.
    Cooldowns, breakers and sticky sessions live in `state`; a state store that fails is
    treated as empty (fail-open), never as a failed request. Implements `ChainRunner`.
    """

    def __init__(self, models: Mapping[str, ModelSpec], state: StateStore, *,
                 settings: DispatchSettings | None = None,
                 classifier_rules: list[ClassifierRule] | None = None,
                 environ: Mapping[str, str] | None = None,
                 outbound: OutboundPolicy | None = None) -> None:
        """`outbound`: the policy every model's base_url must pass (default: `netcheck.rules_from_env().model`)."""
        self.models = dict(models)
        for name, spec in self.models.items():
            if spec.name != name:
                raise ValueError(f"models[{name!r}] holds a ModelSpec named {spec.name!r}")
        self.state = state
        self._state = SafeState(state)  # fail-open view used on the request path
        self.settings = settings or DispatchSettings()
        rules = list(classifier_rules or [])
        if self.settings.classifier_rules_file is not None:
            rules += load_rules(self.settings.classifier_rules_file)
        self.classifier = Classifier(rules)
        self._environ = environ
        self._client = None
        self._adapters: dict[str, Adapter] = {}
        # SSRF: every base_url is checked against the model outbound policy (`policyengine.netcheck`) now,
        # without DNS (a refused one raises OutboundRefused located at the model); names are resolved
        # and checked once per URL before their first call.
        if outbound is None:  # the service passes the settings' policy; otherwise the environment's
            outbound = rules_from_env().model
        self.outbound = outbound
        self._checked_urls: set[str] = set()
        for spec in self.models.values():
            for tgt in targets_of(spec):
                self._check_base_url_static(tgt.spec)
        self.balancer = Balancer()  # per-replica load figures of every deployment
        self.hedges = HedgeBudget()
        self._targets_of: dict[str, list[Target]] = {}
        self.health: Any = None  # a HealthMonitor once started (settings.health_interval, or a model's `health`)
        self._declares_health = any(spec.health is not None for spec in self.models.values())

    # ------------------------------------------------------------------ plumbing
    def _env(self) -> Mapping[str, str]:
        if self._environ is not None:
            return self._environ
        import os

        return os.environ

    def adapter(self, spec: ModelSpec) -> Adapter:
        """The adapter for `spec`'s provider family, made once and shared by its models."""
        fam = "ollama_native" if spec.api == "native" else \
            "openai" if spec.provider.openai_compatible else spec.provider.value
        a = self._adapters.get(fam)
        if a is None:
            if self._client is None:
                self._client = make_client(self.settings.transport, max_connections=self.settings.max_connections)
            if fam == "openai":
                from policyengine.adapters.openai_compat import OpenAICompatAdapter

                a = OpenAICompatAdapter(self._client)
            elif fam == "ollama_native":
                from policyengine.adapters.ollama import OllamaNativeAdapter

                a = OllamaNativeAdapter(self._client)
            elif fam == "bedrock":
                from policyengine.adapters.bedrock import BedrockAdapter

                a = BedrockAdapter(self._client, environ=self._environ)
            elif fam == "anthropic":
                from policyengine.adapters.anthropic import AnthropicAdapter

                a = AnthropicAdapter(self._client)
            elif fam == "vertex":
                from policyengine.adapters.vertex import VertexAdapter

                a = VertexAdapter(self._client, environ=self._environ)
            else:  # pragma: no cover - Provider is an enum
                raise ValueError(f"no adapter for provider {spec.provider}")
            self._adapters[fam] = a
        return a

    def _ensure_health(self) -> None:
        if self.health is None and (self.settings.health_interval is not None or self._declares_health):
            from .health import HealthMonitor

            self.health = HealthMonitor(self, interval=self.settings.health_interval,
                                        timeout=self.settings.health_timeout)
            self.health.start()

    def targets(self, model: str) -> list[Target]:
        """The deployments of `model` as callable targets, in declared order."""
        tgts = self._targets_of.get(model)
        if tgts is None:
            tgts = self._targets_of[model] = targets_of(self.models[model])
        return tgts

    async def aclose(self) -> None:
        """Stop the health checks, close every adapter and the shared HTTP client (a later call makes new ones)."""
        if self.health is not None:
            await self.health.aclose()
            self.health = None
        for a in self._adapters.values():
            await a.aclose()
        self._adapters.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def budget(self, spec: ModelSpec) -> Budget:
        """`spec`'s time limits: its own timeouts, else the settings' defaults."""
        t, s = spec.timeouts, self.settings
        return Budget(connect=t.connect or s.connect_timeout, first_token=t.first_token or s.first_token_timeout,
                      idle=t.idle or s.idle_timeout, attempt=t.total or s.attempt_timeout)

    def _check_base_url_static(self, spec: ModelSpec) -> None:
        url = self._resolve(spec.base_url)
        if not url:
            return  # an unset env(): the call fails as a configuration error
        try:
            self.outbound.check_static(url)
        except OutboundRefused as e:
            where = f"{spec.file}:{spec.line}: " if spec.file and spec.line else ""
            via = f" (from env {spec.base_url.name})" if isinstance(spec.base_url, EnvRef) else ""
            raise OutboundRefused(f"{where}model `{spec.name}` base_url{via} refused: {e.message}", reason=e.reason,
                                  url=e.url, purpose="model",
                                  span=Location(spec.file, spec.line) if spec.file and spec.line else None) from None

    async def _base_url_refused(self, spec: ModelSpec, url: str | None) -> str | None:
        """None when `url` may be called (checked with DNS once per URL); else why not (logged)."""
        if not url or url in self._checked_urls:
            return None
        try:
            await self.outbound.acheck(url)
        except OutboundUnresolved:
            return None  # nothing to check: the connection fails the usual way
        except OutboundRefused as e:
            log.warning("model %s: %s", spec.name, e.message)
            return f"outbound_refused:{e.reason}"
        self._checked_urls.add(url)
        return None

    def _resolve(self, v: str | EnvRef | None) -> str | None:
        if isinstance(v, EnvRef):
            return self._env().get(v.name)
        return v

    def _keys(self, spec: ModelSpec, prefer: str | None) -> list[EnvRef | None]:
        if not spec.keys:
            return [None]
        keys = list(spec.keys)
        if prefer:
            keys.sort(key=lambda k: k.name != prefer)
        return keys

    # ------------------------------------------------------------------ planning
    def new_run(self, body: dict, routing: Routing, session_id: str | None, prompt_tokens: int | None,
                stream: bool, *, embeddings: bool = False) -> Run:
        """A fresh `Run` with the request's deadline; raises ValueError for a malformed body (a chat
        request without messages; an embeddings request without input), an empty chain, a model this
        dispatcher does not know, or negative `prompt_tokens`."""
        if embeddings:
            if not isinstance(body, dict) or body.get("input") in (None, "", []):
                raise ValueError("body must be an OpenAI embeddings request with an 'input'")
        elif not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
            raise ValueError("body must be an OpenAI chat request with a non-empty 'messages' list")
        if not routing.chain:
            raise ValueError("routing has an empty model chain")
        unknown = [m for m in routing.chain if m not in self.models]
        if unknown:
            raise ValueError(f"routing names unknown model(s): {', '.join(unknown)} (known: {', '.join(sorted(self.models))})")
        if prompt_tokens is not None and prompt_tokens < 0:
            raise ValueError("prompt_tokens must be >= 0")
        run = Run(body=body, routing=routing, session_id=session_id, prompt_tokens=prompt_tokens,
                  stream=stream, deadline=time.monotonic() + self.settings.deadline)
        if prompt_tokens is not None:
            run.need_context = prompt_tokens + requested_output_tokens(body)
        return run

    async def _order(self, run: Run) -> list[str]:
        chain = list(dict.fromkeys(run.routing.chain))
        if run.routing.prefer_self_hosted:
            chain.sort(key=lambda m: not self.models[m].self_hosted)
        if run.routing.sticky and run.session_id:
            run.sticky = await self._state.get_sticky(run.session_id)
            st = run.sticky
            if st is not None and st.model in chain and not run.routing.sticky_return:
                chain.remove(st.model)
                chain.insert(0, st.model)
        return chain

    def _skip(self, run: Run, model: str, reason: str, key_id: str | None = None, *,
              deployment: str | None = None) -> None:
        run.attempts.append(Attempt(model=model, key_id=key_id, reason=reason, started_at=time.time(), skipped=True,
                                    deployment=deployment))

    async def _skip_reason(self, run: Run, spec: ModelSpec) -> str | None:
        if spec.name in run.exclude:
            return "excluded"
        if run.require_prefill and not spec.capabilities.prefill:
            return "no_prefill_support"
        if run.stream and not spec.capabilities.streaming:
            return "no_streaming_support"
        if run.body.get("tools") and not spec.capabilities.tools:
            return "no_tool_support"
        if run.need_context is not None and spec.context is not None and spec.context < run.need_context:
            return "context_too_small"
        return None

    # ------------------------------------------------------------------ the chain
    async def execute(self, run: Run, call: Call[T]
                      ) -> tuple[T, ModelSpec, str | None]:
        """Walk the chain until `call` succeeds: its value, model and key id. Raises DispatchError
        when a fatal error stops the run, the deadline passes, or every candidate failed or was
        skipped. Every attempt and skip is appended to `run.attempts`.

        Each model is tried deployment by deployment in the order its balance strategy gives
        (a failed deployment moves to the next one; a context-window error skips the model's
        other deployments). With `routing.hedge_after` set, a target whose answer (first token,
        for a stream) is slower than that starts the next target in parallel, within the hedge
        budget; the first answer wins and the other call is cancelled."""
        self._ensure_health()
        dead: set[str] = set()  # models not to try again in this execute (context too small)
        run.order = await self._order(run)
        targets = self._targets(run, run.order, dead)
        r = run.routing
        if r.hedge_after is not None:
            self.hedges.on_request(r.rule_id, r.hedge_budget)
            return await self._hedged(run, targets, call, dead, r.hedge_after)
        async for tgt, usable in targets:
            outcome, value, key_id = await self._run_target(run, tgt, usable, call)
            if outcome == "ok":
                return value, tgt.spec, key_id
            if outcome == "next_model":
                dead.add(tgt.model)
        raise self._exhausted(run)

    async def _targets(self, run: Run, order: list[str], dead: set[str]
                       ) -> AsyncIterator[tuple[Target, list[tuple[str | None, str | None]]]]:
        """The callable (target, usable keys) pairs of the chain, in order; skips are recorded as they are met."""
        for name in order:
            spec = self.models[name]
            why = await self._skip_reason(run, spec)
            if why is not None:
                if why != "excluded":
                    self._skip(run, name, why)
                continue
            st = run.sticky if run.sticky is not None and run.sticky.model == name else None
            tgts = self.targets(name)
            if len(tgts) > 1:
                tgts = self.balancer.order(spec.balance, tgts, st.deployment if st is not None else None)
            for tgt in tgts:
                if name in dead:
                    break
                if tgt.state_id in run.exclude_deployments:
                    continue
                usable = await self._prepare(run, tgt, st.key_id if st is not None else None)
                if usable:
                    yield tgt, usable

    async def _prepare(self, run: Run, tgt: Target, prefer: str | None) -> list[tuple[str | None, str | None]]:
        """The (key id, secret) pairs `tgt` may be called with now; empty (and the skip recorded) when none."""
        spec, sid = tgt.spec, tgt.state_id
        if self.balancer.at_capacity(tgt):
            self._skip(run, spec.name, "deployment_at_capacity", deployment=tgt.deployment)
            return []
        refused = await self._base_url_refused(spec, self._resolve(spec.base_url))
        if refused is not None:
            self._skip(run, spec.name, refused, deployment=tgt.deployment)
            return []
        candidates: list[tuple[str | None, str | None]] = []  # (key_id, secret)
        for key_ref in self._keys(spec, prefer):
            if key_ref is None:
                candidates.append((None, None))
                continue
            secret = self._resolve(key_ref)
            if not secret:
                self._skip(run, spec.name, "key_missing", key_ref.name, deployment=tgt.deployment)
                continue
            candidates.append((key_ref.name, secret))
        if not candidates:
            return []
        # one state round trip: deployment cooldown, key cooldowns, breaker (claims a half-open
        # probe only when a call will follow)
        scopes = [key_scope(sid, k) for k, _ in candidates if k is not None]
        pf = await self._state.preflight(sid, scopes, self.settings.breaker)
        if pf.model_cooldown is not None:
            self._skip(run, spec.name, f"cooldown:{pf.model_cooldown.reason}", deployment=tgt.deployment)
            return []
        usable = []
        for key_id, secret in candidates:
            cd = pf.key_cooldowns.get(key_scope(sid, key_id)) if key_id is not None else None
            if cd is not None:
                self._skip(run, spec.name, f"cooldown:{cd.reason}", key_id, deployment=tgt.deployment)
            else:
                usable.append((key_id, secret))
        if not usable:
            return []
        if not pf.allowed:
            self._skip(run, spec.name, "breaker_open", deployment=tgt.deployment)
            return []
        run.breaker_clean = pf.breaker_clean
        return usable

    async def _run_target(self, run: Run, tgt: Target, usable: list[tuple[str | None, str | None]],
                          call: Call[T]) -> tuple[str, Any, str | None]:
        """Call `tgt` with its usable keys in turn: ("ok", value, key id), or ("next_target" |
        "next_model", None, None). Counts the call in the balancer's load figures."""
        spec = tgt.spec
        clean = run.breaker_clean
        for key_id, secret in usable:
            extra = {k: (self._resolve(v) or "") for k, v in spec.headers.items()}
            opts = CallOptions(key=secret, key_id=key_id, base_url=self._resolve(spec.base_url),
                               connect_timeout=self.budget(spec).connect,
                               include_usage=self.settings.stream_include_usage,
                               prefill=run.require_prefill, extra_headers=extra)
            self.balancer.started(tgt.state_id)
            t = time.perf_counter()
            latency: float | None = None
            outcome = "next_target"
            try:
                outcome, value = await self._try(run, spec, opts, call, tgt)
                latency = (time.perf_counter() - t) * 1000
            finally:
                # a cancelled hedge (or a fatal error) feeds no sample; a failure a penalised one
                self.balancer.finished(tgt.state_id, latency, failed=outcome != "ok")
            if outcome == "ok":
                run.breaker_clean = clean
                run.deployment, run.state_id = tgt.deployment, tgt.state_id
                await self._on_success(run, spec, key_id)
                return "ok", value, key_id
            if outcome == "next_key":
                continue
            return outcome, None, None
        return "next_target", None, None

    async def _hedged(self, run: Run, targets: AsyncIterator[tuple[Target, list]], call: Call[T],
                      dead: set[str], delay: float) -> tuple[T, ModelSpec, str | None]:
        """`execute` with hedging: at most one hedge per request, started `delay` seconds after the
        current target when it has not answered yet and the hedge budget allows."""
        it = aiter(targets)

        async def pull() -> tuple[Target, list] | None:
            try:
                return await anext(it)
            except StopAsyncIteration:
                return None

        pending: dict[asyncio.Task, tuple[Target, float]] = {}

        def start(item: tuple[Target, list]) -> None:
            tgt, usable = item
            pending[asyncio.ensure_future(self._run_target(run, tgt, usable, call))] = (tgt, time.time())

        hedged = False
        try:
            first = await pull()
            if first is None:
                raise self._exhausted(run)
            start(first)
            while pending:
                wait = delay if not hedged and len(pending) == 1 else None
                done, _ = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    hedged = True  # one decision per request: hedge now, or never
                    if self.hedges.try_take(run.routing.rule_id, run.routing.hedge_budget):
                        nxt = await pull()
                        if nxt is not None:
                            log.info("hedge: %s slower than %.3gs, also trying %s", next(iter(pending.values()))[0].state_id,
                                     delay, nxt[0].state_id)
                            start(nxt)
                    continue
                winner: tuple[Any, Target, str | None] | None = None
                for task in done:
                    tgt, _ = pending.pop(task)
                    outcome, value, key_id = task.result()  # DispatchError (fatal, deadline) propagates
                    if outcome == "ok" and winner is None:
                        winner = (value, tgt, key_id)
                    elif outcome == "ok":
                        await _discard(value)  # both answered at once: keep one
                    elif outcome == "next_model":
                        dead.add(tgt.model)
                if winner is not None:
                    return winner[0], winner[1].spec, winner[2]
                if not pending:
                    nxt = await pull()
                    if nxt is not None:
                        start(nxt)
            raise self._exhausted(run)
        finally:
            for task, (tgt, started) in pending.items():  # the losers: cancelled, recorded
                task.cancel()
                run.attempts.append(Attempt(model=tgt.model, deployment=tgt.deployment, reason="hedge_cancelled",
                                            started_at=started, latency_ms=(time.time() - started) * 1000))
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _try(self, run: Run, spec: ModelSpec, opts: CallOptions,
                   call: Call[T], tgt: Target) -> tuple[str, Any]:
        s = self.settings
        sid, dep = tgt.state_id, tgt.deployment
        budget = self.budget(spec)
        for n in range(s.max_attempts):
            remaining = run.remaining()
            if remaining <= 0:
                raise self._deadline(run)
            budget_n = Budget(connect=min(budget.connect, remaining), first_token=min(budget.first_token, remaining),
                              idle=budget.idle, attempt=min(budget.attempt, remaining))
            started, t = time.time(), time.perf_counter()
            status: int | None = None
            body: Any = None
            try:
                if run.stream and budget_n.first_token <= budget_n.attempt:
                    # opening a stream ends at its first token, under its own first-token timeout,
                    # which fires first: a second timer would never be the one to expire
                    value = await call(spec, opts, budget_n)
                else:
                    async with asyncio.timeout(budget_n.attempt):
                        value = await call(spec, opts, budget_n)
            except UpstreamError as e:
                status, body = e.status, e.body
                cls = self.classifier.classify(e.status, e.headers, e.body, spec.provider.value)
            except TransportError as e:
                cls = Classification(error_class="failover", reason=e.reason, message=e.detail or None)
            except TimeoutError:
                cls = Classification(error_class="failover", reason="timeout",
                                     message=f"no answer within {budget_n.attempt:.3g}s")
            else:
                # trusted values: skip validation on the hot path
                run.attempts.append(construct(Attempt, {
                    "model": spec.name, "key_id": opts.key_id, "status": 200, "error_class": None, "reason": None,
                    "started_at": started, "latency_ms": (time.perf_counter() - t) * 1000, "skipped": False,
                    "message": None, "deployment": dep}))
                return "ok", value
            # a failover-class error the classifier says is worth one more try here (a generic
            # 500, no crash marker): retried on the same target after a backoff, recorded as a retry
            again = None
            if cls.error_class == "failover" and n < cls.retries and n + 1 < s.max_attempts:
                wait = cls.retry_after if cls.retry_after is not None else \
                    random.uniform(0, min(s.backoff_cap, s.backoff_base * 2 ** n))
                if wait <= s.max_retry_wait and wait < run.remaining() - 0.05:
                    again = wait
            run.attempts.append(Attempt(model=spec.name, key_id=opts.key_id, status=status,
                                        error_class="retry" if again is not None else cls.error_class,
                                        reason=cls.reason, started_at=started,
                                        latency_ms=(time.perf_counter() - t) * 1000, message=cls.message,
                                        deployment=dep))
            run.last = (cls, status, body, spec.name)
            if again is not None:
                log.info("attempt failed: model=%s deployment=%s status=%s reason=%s: trying it once more",
                         spec.name, dep, status, cls.reason)
                await asyncio.sleep(again)
                continue
            log.info("attempt failed: model=%s deployment=%s key=%s status=%s class=%s reason=%s", spec.name, dep,
                     opts.key_id, status, cls.error_class, cls.reason)
            if cls.error_class == "fatal":
                await self._state.breaker_success(sid)  # it answered: the server is alive
                raise DispatchError("fatal", cls.reason, status=status, body=decode_body(body),
                                    attempts=run.attempts, message=cls.message, model=spec.name)
            if cls.error_class == "retry":
                delay = cls.retry_after if cls.retry_after is not None else \
                    random.uniform(0, min(s.backoff_cap, s.backoff_base * 2 ** n))
                cap = s.max_retry_wait
                if n + 1 < s.max_attempts and await self._fallback_ready(run, tgt):
                    # the server asked us to come back later (a rate limit, an overload, a model not
                    # ready: every retry-class error) and a healthy fallback can answer now: waiting
                    # is the policy's choice (`on rate_limit wait up to <d>`), never the default
                    wait = run.routing.rate_limit_wait
                    cap = -1.0 if wait is None else min(wait, s.max_retry_wait)
                if n + 1 < s.max_attempts and delay <= cap and delay < run.remaining() - 0.05:
                    await asyncio.sleep(delay)
                    continue
                cool = cls.retry_after if cls.retry_after is not None else s.cooldown_default
                scope = key_scope(sid, opts.key_id) if (cls.key_scoped and opts.key_id) else model_scope(sid)
                await self._state.set_cooldown(scope, cool, cls.reason)
                if cls.reason not in _NO_BREAKER_REASONS:
                    await self.breaker_failure(sid)
                return ("next_key" if scope.startswith("key:") else "next_target"), None
            # failover
            if cls.reason in CONTEXT_REASONS:
                learnt = max(spec.context + 1 if spec.context else 0,
                             self._estimate(run) + requested_output_tokens(run.body))
                run.need_context = max(run.need_context or 0, learnt)
                return "next_model", None  # every deployment of the model has the same window
            if cls.reason in CAPABILITY_REASONS:
                return "next_model", None  # the model (every deployment of it) cannot serve this request
            if cls.reason in _DRAIN_REASONS and tgt.deployment is not None:
                # the deployment vanished (Spot reclaim, crash): drain it for every replica; the
                # request was not answered, so the next deployment takes it
                await self._state.set_cooldown(model_scope(sid), s.drain_cooldown, f"drained:{cls.reason}")
            if cls.key_scoped and opts.key_id:
                cool = s.quota_cooldown if cls.reason in _QUOTA_REASONS else s.auth_cooldown
                await self._state.set_cooldown(key_scope(sid, opts.key_id), cool, cls.reason)
                return "next_key", None
            if cls.reason not in _NO_BREAKER_REASONS:
                await self.breaker_failure(sid)
            elif cls.key_scoped:
                cool = s.quota_cooldown if cls.reason in _QUOTA_REASONS else s.auth_cooldown
                await self._state.set_cooldown(model_scope(sid), cool, cls.reason)
            return "next_target", None
        return "next_model", None  # pragma: no cover

    async def _fallback_ready(self, run: Run, tgt: Target) -> bool:
        """Whether a target after `tgt` in this run could be called now: another deployment of its
        model not tried yet in this run, or a later model of the chain, that the run has not excluded, that can take
        the request (capabilities, known context window) and that is neither cooling down nor
        behind an open breaker (shared state; key cooldowns are not looked at)."""
        now = time.time()

        async def healthy(t: Target) -> bool:
            if t.state_id in run.exclude_deployments or self.balancer.at_capacity(t):
                return False
            if await self._state.get_cooldown(model_scope(t.state_id)) is not None:
                return False
            b = await self._state.breaker(t.state_id)
            return not (b.state == "open" and b.opened_until is not None and b.opened_until > now)

        same = self.targets(tgt.model)
        if len(same) > 1:
            tried = {(a.model, a.deployment) for a in run.attempts}
            for t in same:
                if t.state_id != tgt.state_id and (t.model, t.deployment) not in tried and await healthy(t):
                    return True
        names = run.order or list(run.routing.chain)
        after = names[names.index(tgt.model) + 1:] if tgt.model in names else []
        for name in after:
            spec = self.models[name]
            if await self._skip_reason(run, spec) is not None:
                continue
            for t in self.targets(name):
                if await healthy(t):
                    return True
        return False

    def classify(self, error: UpstreamError, spec: ModelSpec) -> Classification:
        """The error class and reason of an upstream error from `spec` (user rules first)."""
        return self.classifier.classify(error.status, error.headers, error.body, spec.provider.value)

    async def stream_broken(self, run: Run, spec: ModelSpec, key_id: str | None, *, reason: str,
                            message: str | None, status: int | None, started: float,
                            latency_ms: float) -> None:
        """Record a stream from `spec` that broke after it had started: a failover attempt with
        reason `<reason>_mid_stream`, a breaker failure, and `spec` excluded from `run`. When
        `spec` has several deployments only the one that broke (`run.state_id`) is excluded, and
        drained for every replica when its connection went away."""
        sid = run.state_id or spec.name
        run.attempts.append(Attempt(model=spec.name, key_id=key_id, status=status, error_class="failover",
                                    reason=f"{reason}_mid_stream", started_at=started, message=message,
                                    latency_ms=latency_ms, deployment=run.deployment))
        await self.breaker_failure(sid)
        if run.deployment is not None and len(self.targets(spec.name)) > 1:
            run.exclude_deployments.add(sid)
            if reason in _DRAIN_REASONS or reason == "stream_cut":
                await self._state.set_cooldown(model_scope(sid), self.settings.drain_cooldown, f"drained:{reason}")
        else:
            run.exclude.add(spec.name)

    async def breaker_failure(self, model: str) -> None:
        """Count one failure on `model`'s breaker (logged when it opens)."""
        b = await self._state.breaker_failure(model, self.settings.breaker)
        if b.state == "open" and b.opened_until is not None:
            log.warning("circuit breaker open: model=%s trips=%d until=%.0f", model, b.trips, b.opened_until)

    def _estimate(self, run: Run) -> int:
        if run.estimate is None:
            run.estimate = estimate_prompt_tokens(run.body, self.settings.chars_per_token)
        return run.prompt_tokens if run.prompt_tokens is not None else run.estimate

    async def _on_success(self, run: Run, spec: ModelSpec, key_id: str | None) -> None:
        if not run.breaker_clean:
            await self._state.breaker_success(run.state_id or spec.name)
        if run.routing.sticky and run.session_id:
            st = run.sticky
            now = time.time()
            dep = run.deployment
            if st is None or st.model != spec.name or st.key_id != key_id or st.deployment != dep \
                    or now - st.updated > self.settings.sticky_ttl / 4:
                home = st.home if st is not None and st.home else run.routing.chain[0]
                entry = StickyEntry(model=spec.name, key_id=key_id, home=home, updated=now, deployment=dep)
                run.sticky = entry
                await self._state.set_sticky(run.session_id, entry, self.settings.sticky_ttl)

    def _deadline(self, run: Run) -> DispatchError:
        return DispatchError("failover", "deadline_exceeded", attempts=run.attempts,
                             message=f"no model answered within the {self.settings.deadline:.3g}s deadline")

    def _exhausted(self, run: Run) -> DispatchError:
        if run.last is None:
            reasons = sorted({a.reason or "" for a in run.attempts})
            return DispatchError("retry", "all_models_unavailable", attempts=run.attempts,
                                 retry_after=None, message="every model in the chain was skipped: " + ", ".join(reasons))
        cls, status, body, model = run.last
        return DispatchError(cls.error_class, cls.reason, status=status, body=decode_body(body),
                             attempts=run.attempts, retry_after=cls.retry_after, message=cls.message, model=model)

    # ------------------------------------------------------------------ public API
    async def complete(self, body: dict, routing: Routing, *, session_id: str | None = None,
                       prompt_tokens: int | None = None) -> DispatchResult:
        """Run the chain for a non-streaming chat request: the first model's answer, or
        DispatchError (with every attempt) when none answered or a fatal error stopped it.
        ValueError for a malformed request (see `new_run`)."""
        run = self.new_run(body, routing, session_id, prompt_tokens, stream=False)

        async def call(spec: ModelSpec, opts: CallOptions, b: Budget) -> dict:
            return await self.adapter(spec).complete(spec, run.body, opts)

        response, spec, key_id = await self.execute(run, call)
        choices = response.get("choices") or [{}]
        return DispatchResult.model_construct(
            response=response, model=spec.name, key_id=key_id, attempts=run.attempts, usage=response.get("usage"),
            latency_ms=(time.perf_counter() - run.t0) * 1000, finish_reason=(choices[0] or {}).get("finish_reason"),
            continued_from=[], error=None, complete=True)

    async def embed(self, body: dict, routing: Routing, *, session_id: str | None = None,
                    prompt_tokens: int | None = None) -> DispatchResult:
        """Run the chain for an embeddings request (OpenAI's `/v1/embeddings` body): the first
        model's answer (`response` is the OpenAI embeddings list), with the same retries, failover,
        cooldowns, breakers and keys as a chat request, or DispatchError."""
        run = self.new_run(body, routing, session_id, prompt_tokens, stream=False, embeddings=True)

        async def call(spec: ModelSpec, opts: CallOptions, b: Budget) -> dict:
            adapter = self.adapter(spec)
            embed = getattr(adapter, "embed", None)
            if embed is None:
                raise TransportError("config", f"the {spec.provider.value} adapter does not serve embeddings")
            return await embed(spec, run.body, opts)

        response, spec, key_id = await self.execute(run, call)
        return DispatchResult.model_construct(
            response=response, model=spec.name, key_id=key_id, attempts=run.attempts, usage=response.get("usage"),
            latency_ms=(time.perf_counter() - run.t0) * 1000, finish_reason=None, continued_from=[], error=None,
            complete=True)

    def stream(self, body: dict, routing: Routing, *, session_id: str | None = None,
               prompt_tokens: int | None = None) -> DispatchStream:
        """A stream for a streaming chat request; nothing is called until it is iterated (see
        `DispatchStream`). ValueError for a malformed request (see `new_run`)."""
        run = self.new_run(body, routing, session_id, prompt_tokens, stream=True)
        return DispatchStream(self, run)

    async def status(self) -> dict:
        """Observable state: cooldowns and breakers (shared), this replica's deployment load and hedge counts."""
        return {"cooldowns": [c.model_dump() for c in await self.state.cooldowns()],
                "breakers": [b.model_dump() for b in await self.state.breakers()],
                "deployments": {sid: {"outstanding": st.outstanding, "ewma_ms": st.ewma_ms}
                                for sid, st in self.balancer.stats.items()},
                "hedges": self.hedges.counts()}


async def _discard(value: Any) -> None:
    """Close an answer nobody will read (a stream opened by the losing side of a hedge)."""
    close = getattr(getattr(value, "stream", value), "aclose", None)  # an opened stream holds its upstream
    if close is not None:
        try:
            await close()
        except Exception:  # closing a loser must never fail the winner
            log.debug("closing a discarded hedge answer failed", exc_info=True)


__all__ = ["ChainDispatcher"]
