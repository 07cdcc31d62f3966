"""Active health checks: take a deployment out before traffic hits it, bring it back when it answers.

Which deployments are probed, and how often: every deployment of every model when the
dispatcher's `health_interval` is set (each model's own `health ... every D` wins for it), and
the deployments of models that declare `health` in the policy even when it is not (their own
interval, else `DEFAULT_INTERVAL`). What a probe is:

* OpenAI-compatible servers (vLLM, TGI, Ollama, LM Studio, llama.cpp, OpenAI): `GET
  <base_url>/models` by default, or the model's `health` path (`/health` is requested from the
  server root, `models` after the base_url), with the deployment's first key as bearer token;
  a model on Ollama's native API (`api native`) with `GET /api/tags` by default.
* Bedrock and Vertex: a TCP connect to the endpoint's host and port (the deployment's base_url,
  else `bedrock-runtime.<region>.amazonaws.com:443` / `<region>-aiplatform.googleapis.com:443`):
  no signed call, no cost, no quota used. Anthropic servers: a TCP connect to their base_url.

A probe that cannot connect, times out or gets a 5xx puts the deployment in a cooldown with
reason `health_check_failed` in the shared state store, so every replica skips it; a later probe
that answers (any status below 500: a 401 still proves the server is up) clears that cooldown,
or a drain (`drained:<reason>`, set when a request found the deployment's connections refused
or reset), and only those (a cooldown a rate limit or a breaker set stays). The monitor is one background task
owned by the dispatcher; `aclose` cancels it and waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any
from urllib.parse import urlsplit

from policyengine.state import model_scope

from .balance import Target
from .safe_state import log

HEALTH_REASON = "health_check_failed"
DEFAULT_INTERVAL = 10.0  # seconds, for a model that declares `health` without `every` when the dispatcher sets none


def probe_url(tgt: Target, base_url: str | None, environ: Any = None) -> str | None:
    """Where `tgt` is probed: an http(s) URL for OpenAI-compatible servers, the endpoint URL whose
    host and port are connected to for Bedrock and Vertex; None when there is nothing to probe."""
    spec = tgt.spec
    if not spec.provider.openai_compatible:
        if base_url:
            return base_url
        if spec.provider.value not in ("bedrock", "vertex"):
            return None  # an Anthropic server needs its base_url (nothing to connect to without one)
        if spec.provider.value == "bedrock":  # the adapter's own default endpoint (adapters/bedrock.py)
            region = spec.region or (environ or {}).get("AWS_REGION") or "us-east-1"
            return f"https://bedrock-runtime.{region}.amazonaws.com"
        r = spec.region or "us-central1"  # Vertex (adapters/vertex.py)
        return "https://aiplatform.googleapis.com" if r == "global" else f"https://{r}-aiplatform.googleapis.com"
    if not base_url:
        return None
    if spec.api == "native" and not (spec.health is not None and spec.health.path):
        # Ollama's own API: the list of local models
        from policyengine.adapters.ollama import native_root

        return native_root(base_url) + "/api/tags"
    path = spec.health.path if spec.health is not None and spec.health.path else "models"
    if path.startswith("/"):
        parts = urlsplit(base_url)
        return f"{parts.scheme}://{parts.netloc}{path}"
    return base_url.rstrip("/") + "/" + path


class HealthMonitor:
    """Probes every deployment of a dispatcher's models on a fixed interval (see the module docstring)."""

    # `dispatcher` is the ChainDispatcher that owns the monitor (typed Any: dispatcher imports this module)
    def __init__(self, dispatcher: Any, *, interval: float | None, timeout: float = 2.0) -> None:
        """`interval` None: only the models that declare `health` are probed (see the module docstring)."""
        self._d = dispatcher
        self.interval = interval
        self.timeout = timeout
        self._task: asyncio.Task | None = None
        self.rounds = 0  # completed probe rounds
        self.last: dict[str, bool] = {}  # state id -> healthy at the last probe
        self._due: dict[str, float] = {}  # state id -> monotonic time of its next probe

    def interval_of(self, tgt: Target) -> float | None:
        """Seconds between probes of `tgt`, or None when it is not probed."""
        h = tgt.spec.health
        if h is not None and h.interval is not None:
            return h.interval
        if self.interval is not None:
            return self.interval
        return DEFAULT_INTERVAL if h is not None else None

    def monitored(self) -> list[Target]:
        """Every target that is probed, in model and deployment order."""
        return [t for name in self._d.models for t in self._d.targets(name) if self.interval_of(t) is not None]

    def start(self) -> None:
        """Start the background task (in the running loop); a second call does nothing."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="policyengine-health")

    async def aclose(self) -> None:
        """Cancel the background task and wait until it has stopped."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            now = time.monotonic()
            due = [t for t in self.monitored() if self._due.get(t.state_id, 0.0) <= now]
            try:
                if due:
                    await self.check_all(due)
            except Exception:  # one bad round must not stop the checks
                log.warning("health check round failed", exc_info=True)
            for t in due:
                self._due[t.state_id] = now + (self.interval_of(t) or DEFAULT_INTERVAL)
            nxt = min(self._due.values(), default=time.monotonic() + DEFAULT_INTERVAL)
            await asyncio.sleep(max(0.05, nxt - time.monotonic()))

    async def check_all(self, targets: list[Target] | None = None) -> dict[str, bool]:
        """Probe `targets` (default: every deployment of every model) once, concurrently, and update
        the shared cooldowns: state id -> healthy."""
        tgts = targets if targets is not None else [t for name in self._d.models for t in self._d.targets(name)]
        results = await asyncio.gather(*(self._check(t) for t in tgts))
        out = {t.state_id: ok for t, ok in zip(tgts, results, strict=True) if ok is not None}
        self.last.update(out)
        self.rounds += 1
        return out

    async def _check(self, tgt: Target) -> bool | None:
        url = probe_url(tgt, self._d._resolve(tgt.spec.base_url), self._d._env())
        if not url or await self._d._base_url_refused(tgt.spec, url) is not None:
            return None  # nothing that may be probed
        ok = await self.probe(tgt, url)
        state, scope = self._d._state, model_scope(tgt.state_id)
        if not ok:
            if self.last.get(tgt.state_id, True):
                log.warning("health check failed: model=%s deployment=%s", tgt.model, tgt.deployment)
            # long enough to cover the gap to the next probe, which renews or clears it
            await state.set_cooldown(scope, (self.interval_of(tgt) or DEFAULT_INTERVAL) * 2 + self.timeout,
                                     HEALTH_REASON)
        else:
            cd = await state.get_cooldown(scope)
            # a drain (connections refused or reset) is a transport signal too: a probe that
            # connects and gets an answer ends it early
            if cd is not None and (cd.reason == HEALTH_REASON or cd.reason.startswith("drained:")):
                await self._d.state.clear_cooldown(scope)
                log.info("health check passed again: model=%s deployment=%s", tgt.model, tgt.deployment)
        return ok

    async def probe(self, tgt: Target, url: str) -> bool:
        """One probe of `tgt` at `url` (from `probe_url`): True when the server answered (see the module docstring)."""
        spec = tgt.spec
        try:
            async with asyncio.timeout(self.timeout):
                if not spec.provider.openai_compatible:
                    parts = urlsplit(url)
                    port = parts.port or (443 if parts.scheme == "https" else 80)
                    _, w = await asyncio.open_connection(parts.hostname, port)
                    w.close()
                    with contextlib.suppress(OSError):
                        await w.wait_closed()
                    return True
                if self._d._client is None:
                    self._d.adapter(spec)  # makes the shared client
                client = self._d._client
                assert client is not None
                headers = {}
                if spec.keys:
                    key = self._d._resolve(spec.keys[0])
                    if key:
                        headers["Authorization"] = f"Bearer {key}"
                r = await client.get(url, headers=headers)
                return r.status_code < 500
        except (OSError, TimeoutError):
            return False
        except Exception as e:  # any transport failure means "not reachable"
            log.debug("health probe %s: %r", tgt.state_id, e)
            return False


__all__ = ["DEFAULT_INTERVAL", "HEALTH_REASON", "HealthMonitor", "probe_url"]
