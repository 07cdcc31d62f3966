"""The run state of one request and the chain-runner interface a stream is handed.

`Run` is one request's progress through its model chain and `Budget` the time limits of
one attempt. `ChainRunner` is what a stream needs from whoever walks the chain: walk it
with a call until one model answers, the adapter and budget for a model, the classification
of an upstream error, and recording a stream that broke after it had started. The
dispatcher implements it; the stream depends on this module only, never on the dispatcher.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from policyengine.adapters.base import Adapter, CallOptions, UpstreamError
from policyengine.adapters.classify import Classification
from policyengine.state import StickyEntry
from policyengine.types import ModelSpec, Routing

from .results import Attempt
from .settings import DispatchSettings

T = TypeVar("T")


@dataclass(slots=True)
class Budget:
    """Time limits, in seconds, for one attempt on one model.

    `connect` bounds opening the connection, `first_token` the wait for a stream's first
    content token, `idle` the gap between two stream chunks, `attempt` the whole call.
    """

    connect: float
    first_token: float
    idle: float
    attempt: float


@dataclass
class Run:
    """One request's progress through the chain.

    `attempts` only grows, in the order the attempts were made (skips included); `exclude`
    only grows; `deadline` only moves later.
    """

    body: dict
    routing: Routing
    session_id: str | None
    prompt_tokens: int | None
    stream: bool
    deadline: float  # monotonic
    t0: float = field(default_factory=time.perf_counter)
    started: float = field(default_factory=time.monotonic)
    attempts: list[Attempt] = field(default_factory=list)
    need_context: int | None = None  # tokens the window must hold (known or learnt)
    estimate: int | None = None
    exclude: set[str] = field(default_factory=set)  # models not to try again in this run
    require_prefill: bool = False  # only models that support assistant prefill are candidates
    last: tuple[Classification, int | None, Any, str] | None = None  # class, status, body, model
    sticky: StickyEntry | None = None
    breaker_clean: bool = False  # the model that is being tried had no breaker record
    deployment: str | None = None  # the deployment that answered last (None: the model's only one)
    state_id: str | None = None  # its cooldown/breaker name ("<model>@<deployment>" or the model name)
    exclude_deployments: set[str] = field(default_factory=set)  # state ids not to try again in this run
    order: list[str] = field(default_factory=list)  # the chain in the order it is walked (set by execute)

    def remaining(self) -> float:
        """Seconds left before the deadline (negative once it has passed)."""
        return self.deadline - time.monotonic()

    def extend_deadline(self, total: float) -> None:
        """Let the run last `total` seconds from its start, unless its deadline is later already."""
        self.deadline = max(self.deadline, self.started + total)


Call = Callable[[ModelSpec, CallOptions, Budget], Awaitable[T]]
"""One call to one model: the model, its call options (key, URL, headers) and its budget."""


class ChainRunner(Protocol):
    """What a stream is handed to run its chain (the dispatcher implements it)."""

    @property
    def settings(self) -> DispatchSettings:
        """The dispatch settings in force (read-only for the stream)."""
        ...

    async def execute(self, run: Run, call: Call[T]) -> tuple[T, ModelSpec, str | None]:
        """Try the chain's candidates with `call` (retry, failover, cooldowns, breakers) until
        one succeeds: its value, model and key id. Every attempt and skip is recorded in
        `run.attempts`. Raises `DispatchError` when no candidate succeeded."""
        ...

    def adapter(self, spec: ModelSpec) -> Adapter:
        """The provider adapter that calls `spec`."""
        ...

    def budget(self, spec: ModelSpec) -> Budget:
        """`spec`'s time limits (its own, else the settings' defaults), not clipped to a deadline."""
        ...

    def classify(self, error: UpstreamError, spec: ModelSpec) -> Classification:
        """The error class and reason of an upstream error from `spec`."""
        ...

    async def stream_broken(self, run: Run, spec: ModelSpec, key_id: str | None, *, reason: str,
                            message: str | None, status: int | None, started: float,
                            latency_ms: float) -> None:
        """Record that `spec`'s stream broke after it had started: a failover attempt with reason
        `<reason>_mid_stream`, a breaker failure for `spec`, and `spec` excluded from the rest
        of `run`."""
        ...


__all__ = ["Budget", "Call", "ChainRunner", "Run"]
