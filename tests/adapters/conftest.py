"""Dispatch test fixtures live in policyengine.simulate.testing (shared with the adapter tests)."""

from policyengine.simulate.testing import USER, fast_settings  # noqa: F401  (fixtures `fleet`, `make_dispatcher`: tests/conftest.py)
