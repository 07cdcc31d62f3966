"""`policyengine doctor`: what would fail before traffic does.

`diagnose(...)` loads the policy set (as the service would: lint errors are errors here too),
reads the secrets file into a copy of the environment, and checks:

* every `env(...)` the models name is set (`policyengine.doctor.models.check_env`);
* every base URL's shape: an Ollama URL without `/v1`, a URL ending in `/chat/completions`, a
  suspicious path, plain http to a non-local host, a host the outbound policy refuses or that
  does not resolve (`check_url`);
* with `probe`, each endpoint: `GET {base}/models` answers, accepts the key and lists the
  model; with `chat`, a one-token chat completion too (`probe`);
* the channels and reviewer groups the holds name (`policyengine.doctor.approvals`).

The report's exit code is 0 when everything passed, 1 for warnings only, 2 for any error. The
doctor sends nothing but those probes, and never prints a secret's value.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from policyengine.doctor import approvals, models
from policyengine.doctor.findings import Finding, Report

if TYPE_CHECKING:
    from policyengine.settings import Settings

__all__ = ["Finding", "Report", "diagnose"]


async def diagnose(settings: Settings, *, policy_paths: Sequence[str | Path] | None = None, probe: bool = True,
                   chat: bool = False, timeout: float = 5.0, environ: dict[str, str] | None = None) -> Report:
    """Every check above for `settings` and the policy at
    `policy_paths` (default: the settings' `policy_path`). Never raises for a misconfiguration:
    each is a finding."""
    from policyengine.approvals.settings import ApprovalSettings
    from policyengine.dsl import check, load_policy_set
    from policyengine.gateway.secrets import SecretsFile

    report = Report()
    env = dict(os.environ if environ is None else environ)
    secrets_file = settings.secrets_file
    if secrets_file:
        try:
            names = SecretsFile(secrets_file, env).load()
            report.add("ok", "secrets_file", str(secrets_file), f"read {len(names)} variable(s) from the secrets file")
        except OSError as exc:
            report.add("error", "secrets_file_unreadable", str(secrets_file), f"cannot read the secrets file: {exc}")
    paths = list(policy_paths or settings.policy_path)
    diags = check(paths)
    for d in diags:
        if d.is_error:
            report.add("error", f"policy_{d.code}", d.code, d.message, hint=d.hint, where=f"{d.file}:{d.line}:{d.col}")
    if any(d.is_error for d in diags):
        return report
    policy = load_policy_set(paths)
    report.add("ok", "policy_loaded", policy.name, f"policy {policy.name} v{policy.version} loads "
               f"({len(policy.models)} model(s))")

    outbound = settings.outbound_rules()
    usable: list[tuple[models.Target, str]] = []
    for spec in policy.models.values():
        models.check_env(spec, env, report)
        for t in models.targets(spec):
            url = models.resolved_url(t, env)
            if url is None:
                if t.base_url is None and spec.provider in models.OPENAI_COMPATIBLE:
                    report.add("error", "base_url_missing", t.state_id, "an OpenAI-compatible model needs a base_url",
                               where=t.where)
                continue  # an unset env(...) is reported above
            if models.check_url(t, url, outbound.model, report):
                usable.append((t, url))
    if probe and usable:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            for t, url in usable:
                await models.probe(t, url, env, report, client=client, chat=chat)

    aps = ApprovalSettings()
    items = approvals.uses(policy, aps)
    await approvals.check_channels(items, aps, outbound.webhook, env, report, probe=probe, timeout=timeout)
    await approvals.check_reviewers(items, settings, report)
    return report
