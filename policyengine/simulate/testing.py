"""Helpers for tests that drive a dispatcher against the simulated fleet.

Plain values and functions only: this module does not import pytest (the shipped package
never does). The pytest fixtures built on it, `fleet` and `make_dispatcher`, live in the
test suite (`tests/conftest.py`).
"""

from __future__ import annotations

from typing import Any

from policyengine.dispatch import DispatchSettings
from policyengine.state import BreakerConfig

__all__ = ["USER", "fast_settings"]

USER = {"messages": [{"role": "user", "content": "Summarise the refund policy."}]}


def fast_settings(**kw: Any) -> DispatchSettings:
    """Dispatch settings with short backoffs, timeouts and breaker windows, so failover tests
    finish in seconds; any field can be overridden by keyword."""
    base: dict[str, Any] = dict(
        max_attempts=3, backoff_base=0.05, backoff_cap=0.2, max_retry_wait=2.0, cooldown_default=5.0,
        connect_timeout=2.0, first_token_timeout=2.0, idle_timeout=1.5, attempt_timeout=3.0, deadline=20.0,
        done_grace=1.0,
        breaker=BreakerConfig(threshold=2, window=30.0, open_for=0.6, open_max=5.0, probe_timeout=5.0),
    )
    base.update(kw)
    return DispatchSettings(**base)
