"""The policy set serving requests, and its atomic reload.

A reload parses and lints the policy files off the event loop; if anything is
wrong the new set is refused and the old one keeps serving. On success the
(policy, dispatcher) pair is swapped in one assignment, so a request sees
either the old pair or the new one, never a mix. The old dispatcher is closed
after a grace period (requests in flight finish on it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

log = logging.getLogger("policyengine.gateway.policies")

DispatcherFactory = Callable[[Any], Any]  # CompiledPolicy -> ChainDispatcher


class ReloadResult(BaseModel):
    """The outcome of one reload: `ok` False means refused (the old set, `hash`, still serves; `error`
    and `diagnostics` say why); `changed` False with `ok` means the files compiled to the serving hash."""

    ok: bool
    changed: bool = False
    hash: str | None = None  # the hash serving after the call
    previous_hash: str | None = None
    name: str | None = None
    version: Any = None
    files: list[str] = Field(default_factory=list)
    diagnostics: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None
    loaded_at: float = Field(default_factory=time.time)


@dataclass(frozen=True)
class _Serving:
    policy: Any  # CompiledPolicy
    dispatcher: Any
    loaded_at: float


def _load(paths: Sequence[str]) -> Any:
    """Parse, lint and compile the policy set; refuse it (raise) if it does not load, or if it
    uses a signal whose optional dependencies are not installed
    (`policyengine.signals.EmbeddingsNotInstalled`, naming the rule and the extra)."""
    from policyengine.dsl import load_policy_set
    from policyengine.signals.requirements import require_available

    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"policy path not found: {', '.join(missing)}")
    policy = load_policy_set(list(paths))
    require_available(policy)  # find_spec only: imports nothing
    return policy


class PolicyHolder:
    """Holds the policy set serving and its dispatcher; `reload` swaps both in one assignment or not at all.

    A request reads `snapshot()` once and sees one consistent pair. A retired dispatcher is
    closed after `grace_s` seconds, so requests in flight on it finish.
    """

    def __init__(self, paths: Sequence[str], dispatcher_factory: DispatcherFactory | None = None, *,
                 on_loaded: Callable[[Any, str | None], Awaitable[None]] | None = None,
                 grace_s: float = 60.0) -> None:
        self.paths = list(paths)
        self._factory = dispatcher_factory
        self._on_loaded = on_loaded
        self._serving: _Serving | None = None
        self._lock = asyncio.Lock()
        self._grace_s = grace_s
        self._retired: dict[asyncio.Task[None], Any] = {}  # closing after the grace period
        self.last_result: ReloadResult | None = None

    # -- what requests use --------------------------------------------------------------

    @property
    def current(self) -> Any:
        """The CompiledPolicy serving now; RuntimeError before the first successful load."""
        if self._serving is None:
            raise RuntimeError("no policy loaded")
        return self._serving.policy

    @property
    def dispatcher(self) -> Any:
        """The dispatcher built for the serving policy (None without a factory); RuntimeError before the first load."""
        if self._serving is None:
            raise RuntimeError("no policy loaded")
        return self._serving.dispatcher

    def snapshot(self) -> _Serving:
        """The (policy, dispatcher) pair, read once, for one request."""
        if self._serving is None:
            raise RuntimeError("no policy loaded")
        return self._serving

    @property
    def loaded(self) -> bool:
        """True once a policy set has loaded (from then on one always serves)."""
        return self._serving is not None

    # -- reload ---------------------------------------------------------------------------

    async def reload(self, *, by: str | None = None) -> ReloadResult:
        """Load the policy files again (one reload at a time) and serve them if they compile and the
        `on_loaded` hook, when set, succeeds (it is given `by`, who asked). A set that does not load,
        or that the hook fails on, is refused as `ok=False`, not raised, and the old set keeps serving."""
        async with self._lock:
            prev = self._serving
            prev_hash = getattr(prev.policy, "hash", None) if prev else None
            try:
                policy = await asyncio.to_thread(_load, self.paths)
            except Exception as exc:  # lint errors, missing files, broken grammar: refuse
                diags = [d.model_dump(mode="json") if hasattr(d, "model_dump") else {"message": str(d)}
                         for d in getattr(exc, "diagnostics", [])]
                res = ReloadResult(ok=False, hash=prev_hash, previous_hash=prev_hash, diagnostics=diags,
                                   files=self.paths, error=f"{type(exc).__name__}: {exc}")
                log.error("policy reload refused (still serving %s): %s", prev_hash, res.error)
                self.last_result = res
                return res
            if prev is not None and policy.hash == prev_hash:
                res = ReloadResult(ok=True, changed=False, hash=prev_hash, previous_hash=prev_hash,
                                   name=policy.name, version=policy.version, files=sorted(policy.sources))
                self.last_result = res
                return res
            if self._on_loaded is not None:
                try:
                    await self._on_loaded(policy, by)
                except Exception as exc:  # e.g. the database is down: do not serve an unrecorded version
                    res = ReloadResult(ok=False, hash=prev_hash, previous_hash=prev_hash, files=self.paths,
                                       error=f"could not record policy version {policy.hash[:12]}: "
                                             f"{type(exc).__name__}: {exc}")
                    log.error("policy reload refused: %s", res.error)
                    self.last_result = res
                    return res
            dispatcher = self._factory(policy) if self._factory else None
            self._serving = _Serving(policy=policy, dispatcher=dispatcher, loaded_at=time.time())
            if prev is not None and prev.dispatcher is not None:
                t = asyncio.create_task(self._retire(prev.dispatcher))
                self._retired[t] = prev.dispatcher
                t.add_done_callback(lambda task: self._retired.pop(task, None))
            res = ReloadResult(ok=True, changed=True, hash=policy.hash, previous_hash=prev_hash,
                               name=policy.name, version=policy.version, files=sorted(policy.sources))
            log.info("policy %s v%s (%s) serving", policy.name, policy.version, policy.hash[:12])
            self.last_result = res
            return res

    async def _retire(self, dispatcher: Any) -> None:
        await asyncio.sleep(self._grace_s)
        with contextlib.suppress(Exception):
            await dispatcher.aclose()

    async def aclose(self) -> None:
        """Close every dispatcher now: the retired ones (their grace period cut short) and the serving one."""
        for t, dispatcher in list(self._retired.items()):
            t.cancel()
            with contextlib.suppress(Exception):
                await dispatcher.aclose()
        if self._serving is not None and self._serving.dispatcher is not None:
            with contextlib.suppress(Exception):
                await self._serving.dispatcher.aclose()
