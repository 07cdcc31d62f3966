"""Teams / webhook destinations: named in settings, `env:NAME` (what the checker accepts), or a URL."""

from __future__ import annotations

import pytest

from policyengine.approvals.compose import destination
from policyengine.approvals.errors import ApprovalInvalid


def test_named_destination_wins() -> None:
    assert destination({"refunds": "https://hooks.example.com/r"}, "refunds", {}) == "https://hooks.example.com/r"


def test_env_reference_is_read_at_send_time() -> None:
    env = {"REVIEWERS_HOOK": "https://hooks.example.com/secret-path"}
    assert destination({}, "env:REVIEWERS_HOOK", env) == "https://hooks.example.com/secret-path"


def test_unset_env_reference_is_a_clear_error() -> None:
    with pytest.raises(ApprovalInvalid, match="REVIEWERS_HOOK is not set"):
        destination({}, "env:REVIEWERS_HOOK", {})


def test_literal_url_passes_through() -> None:
    assert destination({}, "https://hooks.example.com/x", {}) == "https://hooks.example.com/x"
