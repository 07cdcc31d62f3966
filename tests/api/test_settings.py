"""Service settings that tune the decision log, the key cache and the GC: a bad value is refused
at start with the setting's name, from the environment as from code."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from policyengine.settings import Settings


@pytest.mark.parametrize("name,value", [
    ("log_follow_up_delay_s", "-1"), ("log_follow_up_delay_s", "60"), ("log_follow_up_delay_s", "soon"),
    ("key_revocation_poll_s", "-0.5"), ("gc_gen0_threshold", "-1"),
])
def test_bad_values_are_refused_with_the_setting_named(monkeypatch, name, value):
    monkeypatch.setenv(f"POLICYENGINE_{name.upper()}", value)
    with pytest.raises(ValidationError) as exc:
        Settings()
    assert name in str(exc.value)


def test_good_values_are_taken_from_the_environment(monkeypatch):
    monkeypatch.setenv("POLICYENGINE_LOG_FOLLOW_UP_DELAY_S", "0")
    monkeypatch.setenv("POLICYENGINE_KEY_REVOCATION_POLL_S", "2.5")
    s = Settings()
    assert (s.log_follow_up_delay_s, s.key_revocation_poll_s) == (0, 2.5)


def test_an_empty_variable_is_an_unset_one(monkeypatch):
    """docker-compose's `${X:-}` passes "" for a value nobody filled in: it must mean unset (an empty
    SMTP username turned SMTP AUTH on against a server without it, found by the compose smoke test)."""
    from policyengine.approvals.settings import ApprovalSettings

    monkeypatch.setenv("POLICYENGINE_APPROVALS_SMTP_USERNAME", "")
    monkeypatch.setenv("POLICYENGINE_APPROVALS_SMTP_PASSWORD", "")
    monkeypatch.setenv("POLICYENGINE_APPROVALS_SLACK_BOT_TOKEN", "")
    monkeypatch.setenv("POLICYENGINE_REDIS_URL", "")
    s = ApprovalSettings()
    assert s.smtp_username is None and s.smtp_password is None and s.slack_bot_token is None
    assert Settings().redis_url is None
