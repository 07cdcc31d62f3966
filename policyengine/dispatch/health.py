"""Active health checks: take a deployment out before traffic hits it, bring it back when it answers.

Every `interval` seconds each deployment (every target of every model with a base_url) is
probed: OpenAI-compatible servers with `GET <base_url>/models` (served by vLLM, TGI, Ollama,
LM Studio, llama.cpp and OpenAI alike; a model on Ollama's native API with `GET /api/tags`), Bedrock and Vertex endpoints with a TCP connect to
their host (no signed call, no cost). A probe that cannot connect, times out or gets a 5xx
puts the deployment in a cooldown with reason `health_check_failed` in the shared state
store, so every replica skips it; a later probe that answers (any status below 500: a 401
still proves the server is up) clears that cooldown, and only that one (a cooldown a real
request set stays). The monitor is one background task owned by the dispatcher; `aclose`
cancels it and waits for it.
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


class HealthMonitor:
    """Probes every deployment of a dispatcher's models on a fixed interval (see the module docstring)."""

    # `dispatcher` is the ChainDispatcher that owns the monitor (typed Any: dispatcher imports this module)
    def __init__(self, dispatcher: Any, *, interval: float, timeout: float = 2.0) -> None:
        self._d = dispatcher
        self.interval = interval
        self.timeout = timeout
        self._task: asyncio.Task | None = None
        self.rounds = 0  # completed probe rounds
        self.last: dict[str, bool] = {}  # state id -> healthy at the last probe

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
            t0 = time.monotonic()
            try:
                await self.check_all()
            except Exception:  # one bad round must not stop the checks
                log.warning("health check round failed", exc_info=True)
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - t0)))

    async def check_all(self) -> dict[str, bool]:
        """Probe every deployment once, concurrently, and update the shared cooldowns: state id -> healthy."""
        tgts = [t for name in self._d.models for t in self._d.targets(name)]
        results = await asyncio.gather(*(self._check(t) for t in tgts))
        out = {t.state_id: ok for t, ok in zip(tgts, results, strict=True) if ok is not None}
        self.last.update(out)
        self.rounds += 1
        return out

    async def _check(self, tgt: Target) -> bool | None:
        url = self._d._resolve(tgt.spec.base_url)
        if not url or await self._d._base_url_refused(tgt.spec, url) is not None:
            return None  # nothing that may be probed
        ok = await self.probe(tgt, url)
        state, scope = self._d._state, model_scope(tgt.state_id)
        if not ok:
            if self.last.get(tgt.state_id, True):
                log.warning("health check failed: model=%s deployment=%s", tgt.model, tgt.deployment)
            # long enough to cover the gap to the next probe, which renews or clears it
            await state.set_cooldown(scope, self.interval * 2 + self.timeout, HEALTH_REASON)
        else:
            cd = await state.get_cooldown(scope)
            if cd is not None and cd.reason == HEALTH_REASON:
                await self._d.state.clear_cooldown(scope)
                log.info("health check passed again: model=%s deployment=%s", tgt.model, tgt.deployment)
        return ok

    async def probe(self, tgt: Target, url: str) -> bool:
        """One probe of `tgt` at `url`: True when the server answered (see the module docstring)."""
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
                if spec.api == "native":  # Ollama's own API: the list of local models
                    from policyengine.adapters.ollama import native_root

                    r = await client.get(native_root(url) + "/api/tags", headers=headers)
                    return r.status_code < 500
                r = await client.get(url.rstrip("/") + "/models", headers=headers)
                return r.status_code < 500
        except (OSError, TimeoutError):
            return False
        except Exception as e:  # any transport failure means "not reachable"
            log.debug("health probe %s: %r", tgt.state_id, e)
            return False


__all__ = ["HEALTH_REASON", "HealthMonitor"]
