"""Pytest fixtures for dispatch tests: a simulated fleet on 127.0.0.1 and a dispatcher with short budgets.

Use from a conftest.py: `from policyengine.simulate.testing import fleet, make_dispatcher  # noqa: F401`.
"""

from __future__ import annotations

import pytest

from policyengine.dispatch import ChainDispatcher, DispatchSettings
from policyengine.simulate import SimFleet
from policyengine.state import BreakerConfig, MemoryStateStore

USER = {"messages": [{"role": "user", "content": "Summarise the refund policy."}]}


def fast_settings(**kw) -> DispatchSettings:
    base = dict(
        max_attempts=3, backoff_base=0.05, backoff_cap=0.2, max_retry_wait=2.0, cooldown_default=5.0,
        connect_timeout=2.0, first_token_timeout=2.0, idle_timeout=1.5, attempt_timeout=3.0, deadline=20.0,
        done_grace=1.0,
        breaker=BreakerConfig(threshold=2, window=30.0, open_for=0.6, open_max=5.0, probe_timeout=5.0),
    )
    base.update(kw)
    return DispatchSettings(**base)


@pytest.fixture
async def fleet():
    f = SimFleet()
    await f.start()
    yield f
    await f.stop()


@pytest.fixture
async def make_dispatcher():
    made: list[ChainDispatcher] = []

    def make(models, *, state=None, environ=None, **settings) -> ChainDispatcher:
        d = ChainDispatcher({m.name: m for m in models}, state or MemoryStateStore(), settings=fast_settings(**settings),
                       environ=environ or {})
        made.append(d)
        return d

    yield make
    for d in made:
        await d.aclose()
