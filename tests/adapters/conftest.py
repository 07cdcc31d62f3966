"""Dispatch test fixtures live in policyengine.simulate.testing (shared with the adapter tests)."""

from policyengine.simulate.testing import USER, fast_settings, fleet, make_dispatcher  # noqa: F401
