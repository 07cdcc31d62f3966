"""Settings for approvals and notifications (environment: ``POLICYENGINE_APPROVALS_*``).

Secrets are read from the environment only and held as SecretStr: they are
never logged, never rendered, never stored in the database.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from policyengine.types import Channel


class ApprovalSettings(BaseSettings):
    # An empty variable is an unset one: docker-compose's `${X:-}` and Kubernetes pass "" for values
    # nobody filled in (an empty SMTP username must not turn SMTP AUTH on).
    model_config = SettingsConfigDict(env_prefix="POLICYENGINE_APPROVALS_", extra="ignore", env_ignore_empty=True)

    public_url: str = Field(
        default="http://127.0.0.1:8000", description="Base URL reviewers reach the service at (links in notifications)."
    )
    link_secret: SecretStr | None = Field(default=None, description="Signs review links (>= 16 chars).")
    link_ttl_s: float = Field(default=24 * 3600, gt=0, description="Review links expire after this many seconds.")
    callback_secret: SecretStr | None = Field(default=None, description="HMAC key for callbacks to applications.")
    webhook_secret: SecretStr | None = Field(default=None, description="HMAC key for the generic webhook channel.")
    callback_tolerance_s: float = 300
    callback_allowed_hosts: list[str] = Field(
        default_factory=list, description="Host patterns callbacks may go to (fnmatch, e.g. *.internal); empty = any."
    )
    # Channels to notify when an approval is escalated to a group (default: the original channels).
    group_channels: dict[str, list[Channel]] = Field(default_factory=dict)
    # Channels for held decisions whose rule names none (e.g. a bare `escalate when sentiment < 0.3`).
    default_channels: list[Channel] = Field(default_factory=list)

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    slack_timestamp_tolerance_s: int = 300
    slack_response_url_prefix: str = "https://hooks.slack.com/"
    # group -> Slack user ids allowed to decide for it; a group not listed trusts its channel's members.
    slack_reviewers: dict[str, list[str]] = Field(default_factory=dict)

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 25
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_tls: bool = False  # implicit TLS (port 465)
    smtp_from: str = "policyengine@localhost"
    smtp_timeout_s: float = 30

    # Named destinations: notify teams "refunds" -> teams_webhooks["refunds"]; a literal https URL also works.
    teams_webhooks: dict[str, str] = Field(default_factory=dict)
    webhooks: dict[str, str] = Field(default_factory=dict)

    templates_dir: Path | None = Field(default=None, description="Directory whose templates override the built-ins.")
    sweep_interval_s: float = Field(default=5, gt=0)
    delivery_max_attempts: int = Field(default=8, ge=1)
    delivery_backoff_s: float = Field(default=2, gt=0)
    delivery_backoff_max_s: float = Field(default=600, gt=0)
    delivery_timeout_s: float = Field(default=10, gt=0)
    default_timeout_s: float | None = Field(default=None, description="Timeout for holds whose rule sets none.")
    default_group: str | None = Field(default=None, description="Reviewer group for holds whose rule names none.")
    reviewer_roles: list[str] = Field(default_factory=lambda: ["reviewer", "admin"])

    @field_validator("public_url")
    @classmethod
    def _strip(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("public_url must start with http:// or https://")
        return v.rstrip("/")

    def require_link_secret(self) -> str:
        if self.link_secret is None:
            raise RuntimeError("POLICYENGINE_APPROVALS_LINK_SECRET is not set: review links cannot be signed")
        return self.link_secret.get_secret_value()
