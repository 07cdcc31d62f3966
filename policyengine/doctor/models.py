"""The doctor's checks of the policy's models: every `env(...)` they name is set, each base URL has a
shape the adapter can use and the outbound policy allows, and (when probing) each endpoint answers.

A target is one deployment of a model (a model without `deployments` is one implicit target);
its base URL and keys fall back to the model's, as the dispatcher's do. Checks never print a
key's value: keys are named by their variable.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from policyengine.doctor.findings import Report
from policyengine.netcheck import OutboundPolicy, OutboundRefused, OutboundUnresolved, redact_url
from policyengine.types import EnvRef, ModelSpec, Provider

# providers served by the OpenAI-compatible adapter: base URL = ".../v1", the adapter adds /chat/completions
OPENAI_COMPATIBLE = frozenset({Provider.openai, Provider.vllm, Provider.ollama, Provider.tgi, Provider.lmstudio})
OLLAMA_PORT = 11434


@dataclass(frozen=True)
class Target:
    """One deployment to check: who it is, its base URL (literal or env reference), its keys."""

    model: ModelSpec
    state_id: str
    base_url: str | EnvRef | None
    keys: tuple[EnvRef, ...]
    where: str | None


def targets(spec: ModelSpec) -> list[Target]:
    """The deployments of `spec` (one implicit deployment when it declares none)."""
    where = f"{spec.file}:{spec.line}" if spec.file else None
    if not spec.deployments:
        return [Target(spec, spec.name, spec.base_url, spec.keys, where)]
    return [Target(spec, f"{spec.name}@{d.name}", d.base_url or spec.base_url, d.keys or spec.keys,
                   f"{spec.file}:{d.line}" if spec.file and d.line else where) for d in spec.deployments]


def env_refs(spec: ModelSpec) -> list[tuple[str, EnvRef]]:
    """Every environment reference of `spec`: (what it is for, the reference)."""
    out: list[tuple[str, EnvRef]] = []
    for t in targets(spec):
        if isinstance(t.base_url, EnvRef):
            out.append((f"base_url of {t.state_id}", t.base_url))
        out += [(f"key of {t.state_id}", k) for k in t.keys]
    if isinstance(spec.project, EnvRef):
        out.append((f"project of {spec.name}", spec.project))
    out += [(f"header {h} of {spec.name}", v) for h, v in spec.headers.items() if isinstance(v, EnvRef)]
    unique: list[tuple[str, EnvRef]] = []
    for item in out:
        if all((item[0], item[1].name) != (w, r.name) for w, r in unique):
            unique.append(item)
    return unique


def check_env(spec: ModelSpec, environ: Mapping[str, str], report: Report) -> None:
    """An error for every env(...) of `spec` that is unset or empty."""
    where = f"{spec.file}:{spec.line}" if spec.file else None
    for why, ref in env_refs(spec):
        value = environ.get(ref.name)
        if value is None:
            report.add("error", "env_unset", ref.name, f"{ref} ({why}) is not set", where=where,
                       hint=f"export {ref.name}=... (or put it in the secrets file) before starting the service")
        elif not value.strip():
            report.add("error", "env_empty", ref.name, f"{ref} ({why}) is set but empty", where=where)
        else:
            report.add("ok", "env_set", ref.name, f"{ref} ({why}) is set")


def resolved_url(t: Target, environ: Mapping[str, str]) -> str | None:
    if isinstance(t.base_url, EnvRef):
        return environ.get(t.base_url.name) or None
    return t.base_url


def _loopback_or_private(host: str) -> bool:
    if host in ("localhost",) or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private


def check_url(t: Target, url: str, policy: OutboundPolicy, report: Report) -> bool:
    """The shape of one base URL; False when it cannot be used at all (then it is not probed)."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        report.add("error", "url_malformed", t.state_id, f"base_url {shown!r} is not a URL", where=t.where)
        return False
    if parts.scheme not in ("http", "https") or not host:
        report.add("error", "url_malformed", t.state_id, f"base_url {shown!r} needs http(s)://host", where=t.where)
        return False
    path = parts.path.rstrip("/")
    if t.model.provider in OPENAI_COMPATIBLE:
        if path.endswith("/chat/completions"):
            report.add("error", "url_endpoint_path", t.state_id,
                       f"base_url {shown!r} ends with /chat/completions: the adapter adds it, so calls would go to "
                       ".../chat/completions/chat/completions", hint="end the base_url at /v1", where=t.where)
        elif not path.endswith("/v1") and (port == OLLAMA_PORT or t.model.provider is Provider.ollama
                                           or "ollama" in host):
            report.add("error", "ollama_without_v1", t.state_id,
                       f"base_url {shown!r} looks like Ollama without /v1: its OpenAI-compatible API is under /v1 "
                       "(/chat/completions at the root is a 404)", hint=f"use {url.rstrip('/')}/v1", where=t.where)
        elif not path:
            report.add("warning", "url_without_v1", t.state_id,
                       f"base_url {shown!r} has no path: OpenAI-compatible servers usually serve under /v1",
                       hint=f"use {url.rstrip('/')}/v1 unless this server really serves /chat/completions at its root",
                       where=t.where)
        elif path.rsplit("/", 1)[-1] in ("models", "completions", "embeddings", "api", "chat"):
            report.add("warning", "url_path_suspicious", t.state_id,
                       f"base_url {shown!r} ends with /{path.rsplit('/', 1)[-1]}: a base URL usually ends at /v1",
                       where=t.where)
    if parts.scheme == "http" and not _loopback_or_private(host):
        report.add("warning", "plaintext_http", t.state_id,
                   f"base_url {shown!r} is plain http to a non-local host: keys and prompts travel unencrypted",
                   hint="use https", where=t.where)
    try:
        policy.check(url)
    except OutboundUnresolved as exc:
        report.add("error", "host_unresolved", t.state_id, exc.message, where=t.where)
        return False
    except OutboundRefused as exc:
        report.add("error", "outbound_refused", t.state_id, exc.message, where=t.where)
        return False
    report.add("ok", "url_ok", t.state_id, f"base_url {shown} has a usable shape")
    return True


async def probe(t: Target, url: str, environ: Mapping[str, str], report: Report, *, client: httpx.AsyncClient,
                chat: bool) -> None:
    """GET {base}/models: reachable, the key accepted, the upstream model listed; with `chat`, a
    one-token chat completion too. Only OpenAI-compatible targets are probed."""
    if t.model.provider is Provider.anthropic:
        await _probe_anthropic(t, url, environ, report, client=client, chat=chat)
        return
    if t.model.provider not in OPENAI_COMPATIBLE:
        report.add("ok", "not_probed", t.state_id, f"provider {t.model.provider.value} is not probed by the doctor")
        return
    key_ref = next((k for k in t.keys if environ.get(k.name)), None)
    headers = {"authorization": f"Bearer {environ[key_ref.name]}"} if key_ref is not None else {}
    for h, v in t.model.headers.items():
        value = environ.get(v.name) if isinstance(v, EnvRef) else v
        if value:
            headers[h] = value
    base = url.rstrip("/")
    shown = redact_url(base)
    try:
        r = await client.get(f"{base}/models", headers=headers)
    except httpx.TimeoutException:
        report.add("error", "unreachable", t.state_id, f"{shown}/models: no answer in {client.timeout.read} s",
                   where=t.where)
        return
    except httpx.HTTPError as exc:
        report.add("error", "unreachable", t.state_id, f"{shown}/models: {type(exc).__name__}: {exc}",
                   hint="is the server running and the base_url right?", where=t.where)
        return
    who = f" with key {key_ref.name}" if key_ref is not None else " without a key"
    if r.status_code in (401, 403):
        report.add("error", "auth_refused", t.state_id, f"{shown}/models refused the request{who} ({r.status_code})",
                   hint="check the key (a fixed key is picked up on SIGHUP or from the secrets file)", where=t.where)
        return
    if r.status_code == 404:
        await _missing_v1(t, base, headers, report, client)
        return
    if r.status_code >= 400:
        report.add("error", "probe_failed", t.state_id, f"{shown}/models answered {r.status_code}", where=t.where)
        return
    try:
        ids = [str(m.get("id")) for m in r.json().get("data") or [] if isinstance(m, dict)]
    except (ValueError, AttributeError):
        report.add("warning", "models_unreadable", t.state_id, f"{shown}/models did not answer an OpenAI model list",
                   where=t.where)
        ids = None
    want = t.model.upstream_model
    if ids is not None:
        if want in ids:
            report.add("ok", "model_listed", t.state_id, f"{shown} lists {want}")
        else:
            listed = ", ".join(ids[:8]) + (" ..." if len(ids) > 8 else "") if ids else "none"
            report.add("error", "model_not_listed", t.state_id, f"{shown} does not list model {want!r} (it lists: {listed})",
                       hint="set model_id to the upstream's name for it, or load the model there", where=t.where)
    if chat:
        body = {"model": want, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        try:
            c = await client.post(f"{base}/chat/completions", headers=headers, json=body)
        except httpx.HTTPError as exc:
            report.add("error", "chat_failed", t.state_id, f"one-token chat: {type(exc).__name__}: {exc}", where=t.where)
            return
        if c.status_code == 200:
            report.add("ok", "chat_ok", t.state_id, f"a one-token chat to {want} answered")
        else:
            report.add("error", "chat_failed", t.state_id, f"a one-token chat to {want} answered {c.status_code}",
                       where=t.where)


async def _missing_v1(t: Target, base: str, headers: dict[str, str], report: Report, client: httpx.AsyncClient) -> None:
    """{base}/models was a 404: when {base}/v1/models answers, the base URL lacks /v1 (an Ollama
    server when the list says so); otherwise the base URL is wrong some other way."""
    shown = redact_url(base)
    if not base.endswith("/v1"):
        try:
            r = await client.get(f"{base}/v1/models", headers=headers)
        except httpx.HTTPError:
            r = None
        if r is not None and r.status_code == 200:
            ollama = "ollama" in r.text.lower() or urlsplit(base).port == OLLAMA_PORT
            code = "ollama_without_v1" if ollama else "url_missing_v1"
            server = "an Ollama server" if ollama else "the server"
            report.add("error", code, t.state_id,
                       f"base_url {shown!r} lacks /v1: {server} answers {shown}/v1/models, while chat calls would go "
                       f"to {shown}/chat/completions (a 404)", hint=f"use {base}/v1", where=t.where)
            return
    report.add("error", "models_not_found", t.state_id, f"{shown}/models is a 404: the base_url is probably wrong",
               hint="an OpenAI-compatible base_url ends at /v1", where=t.where)


async def _probe_anthropic(t: Target, url: str, environ: Mapping[str, str], report: Report, *,
                           client: httpx.AsyncClient, chat: bool) -> None:
    """An Anthropic Messages API target: with `chat`, a one-token message (`POST .../v1/messages`,
    as the adapter sends it); without, nothing is sent (the doctor reads no Anthropic model list)."""
    from policyengine.adapters.anthropic import API_VERSION, messages_url

    if not chat:
        report.add("ok", "not_probed", t.state_id, "provider anthropic is probed only with --chat (a one-token message)")
        return
    key_ref = next((k for k in t.keys if environ.get(k.name)), None)
    headers = {"anthropic-version": API_VERSION, "content-type": "application/json"}
    if key_ref is not None:
        headers["x-api-key"] = environ[key_ref.name]
    target = messages_url(url)
    body = {"model": t.model.upstream_model, "max_tokens": 1, "messages": [{"role": "user", "content": "ping"}]}
    try:
        r = await client.post(target, headers=headers, json=body)
    except httpx.HTTPError as exc:
        report.add("error", "unreachable", t.state_id, f"{redact_url(target)}: {type(exc).__name__}: {exc}",
                   where=t.where)
        return
    if r.status_code == 200:
        report.add("ok", "chat_ok", t.state_id, f"a one-token message to {t.model.upstream_model} answered")
    elif r.status_code in (401, 403):
        who = f"key {key_ref.name}" if key_ref is not None else "no key"
        report.add("error", "auth_refused", t.state_id, f"{redact_url(target)} refused {who} ({r.status_code})",
                   where=t.where)
    else:
        report.add("error", "chat_failed", t.state_id,
                   f"a one-token message to {t.model.upstream_model} answered {r.status_code}", where=t.where)
