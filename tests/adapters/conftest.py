"""Dispatch test helpers: `USER` and `fast_settings` from policyengine.simulate.testing; the
`fleet` and `make_dispatcher` fixtures are in tests/conftest.py (shared with the adapter tests)."""

from policyengine.simulate.testing import USER, fast_settings  # noqa: F401
