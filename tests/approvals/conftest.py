"""The running stack for end-to-end approval tests: app + SMTP sink + HTTP recorder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers.net import free_port

from approvals.harness import AppServer, Recorder, SmtpSink

TOKENS = {
    "app": "tok-app-acme-0123456789abcdef",
    "rita": "tok-rita-acme-refunds-0123456789",
    "sam": "tok-sam-acme-refunds-0123456789a",
    "lena": "tok-lena-acme-legal-0123456789ab",
    "gina": "tok-gina-globex-refunds-01234567",
    "alice": "tok-alice-acme-app-reviewer-0123",  # asks (app) and reviews, subject "alice@acme"
    "alice2": "tok-alice-acme-reviewer-key2-012",  # alice's other key, subject "alice"
    "app2": "tok-app2-acme-billing-0123456789",
}
CALLBACK_SECRET = "callback-secret-0123456789abcdef"
SLACK_SIGNING_SECRET = "slack-signing-secret-0123456789"

POLICY = """\
policy "support-desk" version 3

authorize classify_ticket, draft_response, route_department
require approval for refund when amount > 100 GBP {
  reviewers group "refunds"    notify slack "#refunds", email "refunds@example.com"
  remind every 1h              timeout 8h -> deny
}
authorize refund
deny refund when amount > 1000 GBP
deny delete_account
require approval for respond_press {
  reviewers group "comms"      notify teams "refunds"
}
"""


@dataclass
class Stack:
    app: AppServer
    smtp: SmtpSink
    rec: Recorder

    @property
    def url(self) -> str:
        return self.app.url


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from policyengine.settings import SeedKey, Settings

    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "support.policy").write_text(POLICY)
    for name, tok in TOKENS.items():
        monkeypatch.setenv(f"PE_TEST_TOKEN_{name.upper()}", tok)
    port = free_port()
    rec = Recorder().start()
    with SmtpSink() as smtp:
        env = {
            "PUBLIC_URL": f"http://127.0.0.1:{port}",
            "LINK_SECRET": "e2e-link-secret-0123456789abcdef",
            "CALLBACK_SECRET": CALLBACK_SECRET,
            "SLACK_BOT_TOKEN": "xoxb-test-token",
            "SLACK_SIGNING_SECRET": SLACK_SIGNING_SECRET,
            "SLACK_API_URL": f"{rec.url}/api/",
            "SLACK_RESPONSE_URL_PREFIX": rec.url,
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(smtp.port),
            "SMTP_FROM": "policyengine@example.com",
            "SWEEP_INTERVAL_S": "0.5",
            "DELIVERY_BACKOFF_S": "0.2",
            "TEAMS_WEBHOOKS": json.dumps({"refunds": f"{rec.url}/teams"}),
        }
        for k, v in env.items():
            monkeypatch.setenv(f"POLICYENGINE_APPROVALS_{k}", v)
        settings = Settings(
            database_url=f"sqlite:///{tmp_path}/pe.db", policy_path=[str(tmp_path / "policies")], port=port,
            seed_keys=[
                SeedKey(token_env="PE_TEST_TOKEN_APP", tenant="acme", roles=["app"], subject="support-bot"),
                SeedKey(token_env="PE_TEST_TOKEN_RITA", tenant="acme", roles=["reviewer"], subject="rita", groups=["refunds"]),
                SeedKey(token_env="PE_TEST_TOKEN_SAM", tenant="acme", roles=["reviewer"], subject="sam", groups=["refunds"]),
                SeedKey(token_env="PE_TEST_TOKEN_LENA", tenant="acme", roles=["reviewer"], subject="lena", groups=["legal"]),
                SeedKey(token_env="PE_TEST_TOKEN_GINA", tenant="globex", roles=["reviewer"], subject="gina", groups=["refunds"]),
                SeedKey(token_env="PE_TEST_TOKEN_ALICE", tenant="acme", roles=["app", "reviewer"], subject="alice@acme",
                        groups=["refunds"]),
                SeedKey(token_env="PE_TEST_TOKEN_ALICE2", tenant="acme", roles=["reviewer"], subject="alice",
                        groups=["refunds"]),
                SeedKey(token_env="PE_TEST_TOKEN_APP2", tenant="acme", roles=["app"], subject="billing-bot"),
            ],
        )
        with AppServer(settings) as app:
            yield Stack(app=app, smtp=smtp, rec=rec)
    rec.stop()
