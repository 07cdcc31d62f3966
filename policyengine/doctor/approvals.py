"""The doctor's checks of what held decisions need: every channel the policy notifies resolves
(SMTP reachable, Slack token set, a Teams / webhook destination named in the settings or an
allowed URL), review links can be signed, and every reviewer group has someone to decide.

Reviewers are the API keys (in the key store, or seeded by the settings) holding the reviewer or
admin role and the group (or `*`). The key store is read, never written or migrated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from policyengine.approvals.compose import destination
from policyengine.approvals.errors import ApprovalInvalid
from policyengine.approvals.settings import ApprovalSettings
from policyengine.doctor.findings import Report
from policyengine.netcheck import OutboundPolicy, OutboundRefused, redact_url
from policyengine.settings import Settings

PREFIX = "POLICYENGINE_APPROVALS_"


@dataclass(frozen=True)
class Use:
    """A channel or group the policy names, and the first rule that names it."""

    kind: str  # email / slack / teams / webhook, or "group"
    target: str
    where: str | None


def uses(policy: Any, settings: ApprovalSettings) -> list[Use]:
    """Every channel and reviewer group the policy's holds (and the approval settings) name, once each."""
    found: dict[tuple[str, str], Use] = {}

    def add(kind: str, target: str, where: str | None) -> None:
        found.setdefault((kind, target), Use(kind, target, where))

    plans = [*policy.plans.values(), policy.global_plan]
    for plan in plans:
        for rule in plan.holds:
            ob = getattr(rule, "obligation", None) or {}
            span = getattr(rule, "span", None)
            where = f"{span.file}:{span.line}" if span is not None and span.file else rule.rule_id
            for ch in ob.get("channels") or []:  # Channel models (or their dicts)
                kind, target = (ch["kind"], ch["target"]) if isinstance(ch, dict) else (ch.kind, ch.target)
                add(kind, target, where)
            for g in (ob.get("group"), ob.get("escalate_to")):
                if g:
                    add("group", g, where)
    for ch in settings.default_channels:
        add(ch.kind, ch.target, f"{PREFIX}DEFAULT_CHANNELS")
    for g, chans in settings.group_channels.items():
        for ch in chans:
            add(ch.kind, ch.target, f"{PREFIX}GROUP_CHANNELS[{g}]")
    return list(found.values())


async def _smtp_reachable(host: str, port: int, timeout: float) -> str | None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return None


async def check_channels(items: list[Use], settings: ApprovalSettings, webhook_policy: OutboundPolicy,
                         environ: Mapping[str, str], report: Report, *, probe: bool, timeout: float) -> None:
    """One finding per channel (and an error when a held decision could not be reviewed by link)."""
    channels = [u for u in items if u.kind != "group"]
    if items and settings.link_secret is None:
        report.add("error", "link_secret_unset", f"{PREFIX}LINK_SECRET",
                   "the policy holds decisions for review but review links cannot be signed",
                   hint=f"set {PREFIX}LINK_SECRET (16+ characters)")
    smtp_checked: str | None = None
    for u in channels:
        subject = f"{u.kind} {u.target}"
        if u.kind == "email":
            if not probe:
                report.add("ok", "smtp_not_probed", subject, f"SMTP {settings.smtp_host}:{settings.smtp_port} not probed")
                continue
            if smtp_checked is None:
                smtp_checked = await _smtp_reachable(settings.smtp_host, settings.smtp_port, timeout) or ""
            if smtp_checked:
                report.add("error", "smtp_unreachable", subject,
                           f"SMTP {settings.smtp_host}:{settings.smtp_port} does not accept connections ({smtp_checked})",
                           hint=f"set {PREFIX}SMTP_HOST / {PREFIX}SMTP_PORT", where=u.where)
            else:
                report.add("ok", "smtp_ok", subject, f"SMTP {settings.smtp_host}:{settings.smtp_port} accepts connections")
        elif u.kind == "slack":
            if settings.slack_bot_token is None:
                report.add("error", "slack_token_unset", subject, "a Slack channel is notified but no bot token is set",
                           hint=f"set {PREFIX}SLACK_BOT_TOKEN", where=u.where)
            else:
                report.add("ok", "slack_ok", subject, "Slack bot token is set")
                if settings.slack_signing_secret is None:
                    report.add("warning", "slack_signing_secret_unset", subject,
                               "Slack buttons cannot be verified without the signing secret",
                               hint=f"set {PREFIX}SLACK_SIGNING_SECRET", where=u.where)
        elif u.kind in ("teams", "webhook"):
            named = settings.teams_webhooks if u.kind == "teams" else settings.webhooks
            setting = f"{PREFIX}{'TEAMS_WEBHOOKS' if u.kind == 'teams' else 'WEBHOOKS'}"
            try:
                url = destination(named, u.target, environ)
            except ApprovalInvalid as exc:
                report.add("error", "channel_unresolved", subject, exc.message, where=u.where)
                continue
            if "://" not in url:
                report.add("error", "channel_unresolved", subject,
                           f"{u.kind} destination {u.target!r} is neither a name in {setting} nor a URL",
                           hint=f"add it to {setting} (JSON: {{\"{u.target}\": \"https://...\"}})", where=u.where)
                continue
            try:
                webhook_policy.check(url)
            except OutboundRefused as exc:
                report.add("error", "channel_refused", subject, exc.message, where=u.where)
                continue
            report.add("ok", "channel_ok", subject, f"{u.kind} destination resolves to {redact_url(url)}")


@dataclass(frozen=True)
class _Key:
    """A key seeded by the settings (created at start), as `_reviewers` reads stored keys."""

    roles: tuple[str, ...]
    groups: tuple[str, ...]
    subject: str
    revoked_at: None = None


def _reviewers(keys: Iterable[Any]) -> dict[str, set[str]]:
    """group -> the subjects of live reviewer/admin keys in it (`*` for a key of every group)."""
    out: dict[str, set[str]] = {}
    for k in keys:
        roles = set(getattr(k, "roles", ()) or ())
        if getattr(k, "revoked_at", None) is not None or not roles & {"reviewer", "admin"}:
            continue
        for g in getattr(k, "groups", ()) or ():
            out.setdefault(g, set()).add(str(getattr(k, "subject", "?")))
    return out


async def stored_keys(database_url: str) -> tuple[list[Any], str | None]:
    """The key store's keys, or ([], why not). Never creates or migrates the database."""
    from pathlib import Path

    from policyengine.store import ApiKeyRepo, Database
    from policyengine.store.db import backend, sync_url

    if backend(database_url) == "sqlite":
        path = sync_url(database_url).database
        if not path or path == ":memory:" or not Path(path).exists():
            return [], f"the database {path or database_url!r} does not exist yet"
    db = Database.open(database_url)
    try:
        return await ApiKeyRepo(db.sessionmaker).list(), None
    except Exception as exc:  # an unmigrated or unreachable database: report, do not fail the doctor
        return [], f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        await db.aclose()


async def check_reviewers(items: list[Use], settings: Settings, report: Report) -> None:
    """An error for every reviewer group no live key can decide for (a warning when the key store
    cannot be read and the seeded keys do not cover it)."""
    groups = sorted({u.target for u in items if u.kind == "group"})
    if not groups:
        return
    keys, why_not = await stored_keys(settings.database_url)
    seeded = [_Key(tuple(s.roles), tuple(s.groups), s.subject) for s in settings.seed_keys]
    by_group = _reviewers([*keys, *seeded])
    anyone = by_group.get("*", set())
    where = {u.target: u.where for u in items if u.kind == "group"}
    for g in groups:
        who = by_group.get(g, set()) | anyone
        if who:
            report.add("ok", "reviewers_ok", f"group {g}", f"{len(who)} reviewer key(s) (of any tenant): "
                       f"{', '.join(sorted(who)[:5])}")
        elif why_not:
            report.add("warning", "reviewers_unknown", f"group {g}",
                       f"no seeded reviewer of group {g}, and the key store cannot be read ({why_not})", where=where[g])
        else:
            report.add("error", "reviewers_missing", f"group {g}",
                       f"no live reviewer or admin key is in group {g}: its approvals can only time out",
                       hint=f"policyengine keys create --tenant T --role reviewer --group {g}", where=where[g])
