"""Outbound URL policy (SSRF, issue #9): classification, policies, settings, and the model/webhook call sites.

No test sends traffic anywhere but loopback: addresses are literal, names are resolved through a
patched `getaddrinfo`, HTTP clients use `httpx.MockTransport`, and the dispatcher tests refuse
before any connection is made.
"""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from policyengine.netcheck import (
    ALWAYS_REFUSED,
    AddressClass,
    OutboundPolicy,
    OutboundRefused,
    OutboundUnresolved,
    classify_ip,
    literal_class,
    parse_target,
    redact_url,
)
from policyengine.settings import OutboundHosts, OutboundSettings, Settings, default_outbound_rules

MODEL = OutboundPolicy("model", allow_public=True, allow_private=True)
WEBHOOK = OutboundPolicy("webhook", allow_public=True, allow_private=False, setting="POLICYENGINE_WEBHOOK_HOSTS_ALLOW")
CALLBACK = OutboundPolicy("callback", allow_public=False, allow_private=False)


@pytest.fixture
def fake_dns(monkeypatch):
    """`fake_dns({"name": ["1.2.3.4", ...]})`: getaddrinfo answers these names, and fails for any other."""

    def install(table: dict[str, list[str]]) -> None:
        def getaddrinfo(host, port, *args, **kwargs):
            if host not in table:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            out = []
            for a in table[host]:
                fam = socket.AF_INET6 if ":" in a else socket.AF_INET
                out.append((fam, socket.SOCK_STREAM, 6, "", (a, port) if fam == socket.AF_INET else (a, port, 0, 0)))
            return out

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    return install


@pytest.mark.parametrize(("ip", "cls"), [
    ("169.254.169.254", AddressClass.metadata), ("fd00:ec2::254", AddressClass.metadata),
    ("169.254.170.2", AddressClass.metadata), ("100.100.100.200", AddressClass.metadata),
    ("169.254.1.1", AddressClass.link_local), ("fe80::1", AddressClass.link_local),
    ("127.0.0.1", AddressClass.loopback), ("127.8.9.10", AddressClass.loopback), ("::1", AddressClass.loopback),
    ("10.0.0.5", AddressClass.private), ("172.16.3.4", AddressClass.private), ("192.168.1.1", AddressClass.private),
    ("100.64.0.1", AddressClass.private), ("fd12:3456::1", AddressClass.private),
    ("224.0.0.1", AddressClass.multicast), ("ff02::1", AddressClass.multicast),
    ("0.0.0.0", AddressClass.unspecified), ("::", AddressClass.unspecified),
    ("240.0.0.1", AddressClass.reserved), ("255.255.255.255", AddressClass.reserved),
    ("8.8.8.8", AddressClass.public), ("2606:4700::1111", AddressClass.public),
    ("::ffff:169.254.169.254", AddressClass.metadata), ("::ffff:10.0.0.5", AddressClass.private),
    ("64:ff9b::a9fe:a9fe", AddressClass.metadata),
])
def test_every_address_class(ip, cls):
    assert classify_ip(ip) is cls


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/latest", "http://metadata.google.internal/x",
    "http://METADATA.google.internal./x", "http://2852039166/", "http://0xa9fea9fe/", "http://169.254.43518/",
    "http://[::ffff:169.254.169.254]/", "http://169.254.10.10:8080/", "http://[fe80::1%25eth0]/", "http://0.0.0.0:80/",
    "http://224.0.0.1/",
])
def test_metadata_link_local_and_special_addresses_are_always_refused(url):
    for policy in (MODEL, WEBHOOK, CALLBACK, OutboundPolicy("webhook", allow=("169.254.0.0/16", "public", "private",
                                                                                 "metadata.google.internal"))):
        with pytest.raises(OutboundRefused) as e:
            policy.check(url)
        assert e.value.code == "outbound_refused" and e.value.reason in {c.value for c in ALWAYS_REFUSED}


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://127.0.0.1:25/", "ftp://example.com/", "dict://x:11211/",
                                 "//example.com/x", "example.com/hook"])
def test_only_http_and_https(url):
    with pytest.raises(OutboundRefused) as e:
        MODEL.check(url)
    assert e.value.reason in ("scheme", "invalid")


@pytest.mark.parametrize("url", ["http://a@b@10.0.0.5/", "http://exa mple.com/", "http://evil.com\\@10.0.0.5/",
                                 "http://%31%30.0.0.5/", "http://[::1/", "http://host:99999/"])
def test_ambiguous_authorities_are_refused(url):
    with pytest.raises(OutboundRefused) as e:
        MODEL.check(url)
    assert e.value.reason == "invalid"


def test_private_and_loopback_only_where_configured():
    for url in ("http://10.0.0.5:8000/v1", "http://[::1]:8/", "http://127.0.0.1:9/", "http://localhost:9/"):
        MODEL.check(url)  # the model default: self-hosted models live there
        with pytest.raises(OutboundRefused, match="POLICYENGINE_WEBHOOK_HOSTS_ALLOW") as e:
            WEBHOOK.check(url)
        assert e.value.reason in ("private", "loopback")
        with pytest.raises(OutboundRefused):
            CALLBACK.check(url)
    strict_model = OutboundPolicy("model", allow_private=False, allow=("10.1.0.0/16",))
    strict_model.check("http://10.1.2.3/v1")
    with pytest.raises(OutboundRefused, match="private"):
        strict_model.check("http://10.2.0.1/v1")
    OutboundPolicy("webhook", allow_private=False, allow=("127.0.0.1",)).check("http://127.0.0.1:1234/hook")


def test_public_addresses_for_models_and_webhooks_but_callbacks_only_when_allowlisted():
    MODEL.check("https://8.8.8.8/v1")
    WEBHOOK.check("https://8.8.8.8/hook")
    with pytest.raises(OutboundRefused) as e:
        CALLBACK.check("https://8.8.8.8/cb")
    assert e.value.reason == "public"
    with pytest.raises(OutboundRefused) as e:
        CALLBACK.check("https://app.example.com/cb")  # not even resolved: nothing could admit it
    assert e.value.reason == "not_allowlisted"
    OutboundPolicy("callback", allow_public=False, allow=("public",)).check("https://8.8.8.8/cb")


def test_names_are_resolved_and_every_address_checked(fake_dns):
    fake_dns({"hooks.example.com": ["93.184.216.34"], "rebind.example.com": ["93.184.216.34", "169.254.169.254"],
              "inside.example.com": ["10.0.0.5"], "v6.example.com": ["fd00:ec2::254"]})
    WEBHOOK.check("https://hooks.example.com/x")
    with pytest.raises(OutboundRefused) as e:
        WEBHOOK.check("https://rebind.example.com/x")
    assert e.value.reason == "metadata" and "169.254.169.254" in e.value.message
    with pytest.raises(OutboundRefused) as e:
        WEBHOOK.check("https://inside.example.com/x")
    assert e.value.reason == "private"
    with pytest.raises(OutboundRefused) as e:
        MODEL.check("http://v6.example.com/v1")
    assert e.value.reason == "metadata"
    with pytest.raises(OutboundUnresolved) as u:
        WEBHOOK.check("https://nowhere.example.com/x")
    assert u.value.code == "outbound_unresolved" and isinstance(u.value, OutboundRefused)


def test_allowlisted_names_admit_private_addresses_but_never_metadata(fake_dns):
    fake_dns({"app.corp.example": ["10.0.0.5"], "evil.corp.example": ["169.254.169.254"]})
    cb = OutboundPolicy("callback", allow_public=False, allow=("*.corp.example",))
    cb.check("https://app.corp.example/cb")
    with pytest.raises(OutboundRefused) as e:
        cb.check("https://evil.corp.example/cb")
    assert e.value.reason == "metadata"


async def test_async_check_resolves_through_the_loop(fake_dns):
    fake_dns({"inside.example.com": ["10.0.0.5"], "hooks.example.com": ["93.184.216.34"]})
    await WEBHOOK.acheck("https://hooks.example.com/x")
    with pytest.raises(OutboundRefused):
        await WEBHOOK.acheck("https://inside.example.com/x")


def test_static_check_needs_no_dns(monkeypatch):
    def no_dns(*a, **k):
        raise AssertionError("check_static resolved a name")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    WEBHOOK.check_static("https://hooks.example.com/x")
    with pytest.raises(OutboundRefused):
        WEBHOOK.check_static("http://10.0.0.5/x")
    with pytest.raises(OutboundRefused):
        WEBHOOK.check_static("http://metadata.google.internal/x")
    assert literal_class("http://10.0.0.5/") is AddressClass.private
    assert literal_class("http://localhost:1/") is AddressClass.loopback
    assert literal_class("https://api.example.com/") is None


def test_messages_never_carry_userinfo_or_query():
    with pytest.raises(OutboundRefused) as e:
        WEBHOOK.check("http://admin:hunter2@10.0.0.5/x?token=abc123")
    assert "hunter2" not in e.value.message and "abc123" not in e.value.message
    assert redact_url("https://u:p@h.example/p?api_key=k#f") == "https://h.example/p"
    assert parse_target("https://h.example:8443/p").port == 8443


def test_bad_allowlist_entries_fail_at_construction():
    with pytest.raises(ValueError):
        OutboundPolicy("webhook", allow=("not a host/or cidr",))


def test_settings_defaults_and_environment(monkeypatch):
    for k in ("MODEL_HOSTS_ALLOW_PRIVATE", "MODEL_HOSTS_ALLOW", "WEBHOOK_HOSTS_ALLOW", "CALLBACK_HOSTS_ALLOW",
              "SETTINGS_FILE"):
        monkeypatch.delenv(f"POLICYENGINE_{k}", raising=False)
    d = OutboundHosts()
    assert d.model_hosts_allow_private is True and d.model_hosts_allow == []
    assert d.webhook_hosts_allow == [] and d.callback_hosts_allow == []
    rules = default_outbound_rules()
    rules.model.check("http://10.0.0.5/v1")
    with pytest.raises(OutboundRefused):
        rules.webhook.check("http://10.0.0.5/hook")
    with pytest.raises(OutboundRefused):
        rules.callback.check_static("https://app.example.com/cb")
    monkeypatch.setenv("POLICYENGINE_MODEL_HOSTS_ALLOW_PRIVATE", "false")
    monkeypatch.setenv("POLICYENGINE_CALLBACK_HOSTS_ALLOW", "app.example.com, 10.9.0.0/16")
    rules = default_outbound_rules()
    with pytest.raises(OutboundRefused):
        rules.model.check("http://10.0.0.5/v1")
    rules.callback.check_static("https://app.example.com/cb")
    rules.callback.check("http://10.9.1.1/cb")
    assert OutboundSettings().callback_hosts_allow == ["app.example.com", "10.9.0.0/16"]
    s = Settings(database_url="sqlite:///x.db", webhook_hosts_allow=["hooks.internal"])
    assert s.outbound_rules().webhook.name_allowed("hooks.internal")
    with pytest.raises(ValueError):
        Settings(database_url="sqlite:///x.db", callback_hosts_allow=["bad entry/"])


# ---------------------------------------------------------------------- webhook and Teams delivery


def _mock_client(seen: list[httpx.Request], status: int = 200, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, headers=headers or {}, text="ok")

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/iam", "http://10.0.0.5/hook",
                                 "file:///etc/passwd", "http://[fd00:ec2::254]/"])
async def test_webhook_and_teams_targets_are_refused_before_sending(url, caplog):
    from policyengine.notifier.errors import DeliveryError
    from policyengine.notifier.teams import TeamsSender
    from policyengine.notifier.webhook import WebhookSender

    seen: list[httpx.Request] = []
    async with _mock_client(seen) as http:
        with pytest.raises(DeliveryError) as e:
            await WebhookSender(http, "s" * 20, policy=WEBHOOK).post(url, {"event": "x"})
        assert e.value.retriable is False and "refused" in str(e.value)
        with pytest.raises(DeliveryError) as e:
            await TeamsSender(http, policy=WEBHOOK).post(url, {"type": "message"})
        assert e.value.retriable is False
    assert seen == []
    assert any("refused" in r.getMessage() for r in caplog.records)


async def test_webhooks_are_sent_to_admitted_targets_and_never_follow_redirects(fake_dns):
    from policyengine.notifier.errors import DeliveryError
    from policyengine.notifier.webhook import WebhookSender

    fake_dns({"hooks.example.com": ["93.184.216.34"]})
    seen: list[httpx.Request] = []
    async with _mock_client(seen, 302, {"location": "http://169.254.169.254/latest"}) as http:
        with pytest.raises(DeliveryError) as e:
            await WebhookSender(http, None, policy=WEBHOOK).post("https://hooks.example.com/x", {"event": "x"})
        assert e.value.retriable is False and "302" in str(e.value)
    assert [str(r.url) for r in seen] == ["https://hooks.example.com/x"]  # the redirect was not followed


async def test_unresolvable_webhook_names_are_retried_later(fake_dns):
    from policyengine.notifier.errors import DeliveryError
    from policyengine.notifier.webhook import WebhookSender

    fake_dns({})
    seen: list[httpx.Request] = []
    async with _mock_client(seen) as http:
        with pytest.raises(DeliveryError) as e:
            await WebhookSender(http, None, policy=WEBHOOK).post("https://hooks.example.com/x", {})
    assert e.value.retriable is True and seen == []


# ---------------------------------------------------------------------- model base_url


def _spec(name: str, base_url, **kw):
    from policyengine.types import ModelSpec

    return ModelSpec(name=name, provider="vllm", base_url=base_url, file="fleet.policy", line=3, **kw)


@pytest.mark.parametrize("url", ["http://169.254.169.254/v1", "file:///etc/passwd", "http://metadata.google.internal/v1",
                                 "http://[fd00:ec2::254]/v1"])
def test_a_refused_base_url_fails_the_dispatcher_with_the_models_location(url):
    from policyengine.dispatch import ChainDispatcher
    from policyengine.state import MemoryStateStore

    with pytest.raises(OutboundRefused) as e:
        ChainDispatcher({"m": _spec("m", url)}, MemoryStateStore(), environ={}, outbound=MODEL)
    assert e.value.message.startswith("fleet.policy:3: model `m` base_url")
    assert (e.value.span.file, e.value.span.line) == ("fleet.policy", 3)


def test_an_env_base_url_is_checked_when_the_dispatcher_is_built():
    from policyengine.dispatch import ChainDispatcher
    from policyengine.state import MemoryStateStore
    from policyengine.types import EnvRef

    with pytest.raises(OutboundRefused, match="from env M_URL"):
        ChainDispatcher({"m": _spec("m", EnvRef(name="M_URL"))}, MemoryStateStore(),
                        environ={"M_URL": "http://169.254.169.254/v1"}, outbound=MODEL)
    strict = OutboundPolicy("model", allow_private=False)
    with pytest.raises(OutboundRefused, match="private"):
        ChainDispatcher({"m": _spec("m", "http://10.0.0.5:8000/v1")}, MemoryStateStore(), environ={}, outbound=strict)
    ChainDispatcher({"m": _spec("m", "http://10.0.0.5:8000/v1")}, MemoryStateStore(), environ={}, outbound=MODEL)
    ChainDispatcher({"m": _spec("m", EnvRef(name="UNSET"))}, MemoryStateStore(), environ={}, outbound=MODEL)


async def test_a_base_url_changed_in_the_environment_is_checked_before_its_first_call():
    from policyengine.dispatch import ChainDispatcher, DispatchError
    from policyengine.simulate.testing import fast_settings
    from policyengine.state import MemoryStateStore
    from policyengine.types import EnvRef, Routing

    environ = {"M_URL": "http://127.0.0.1:9/v1"}
    d = ChainDispatcher({"m": _spec("m", EnvRef(name="M_URL"))}, MemoryStateStore(), environ=environ,
                        settings=fast_settings(), outbound=MODEL)
    try:
        environ["M_URL"] = "http://169.254.169.254/v1"  # a refused URL never reaches a transport
        with pytest.raises(DispatchError) as e:
            await asyncio.wait_for(d.complete({"messages": [{"role": "user", "content": "hi"}]},
                                              Routing(chain=["m"])), 10)
        assert [(a.model, a.reason, a.skipped) for a in e.value.attempts] == [("m", "outbound_refused:metadata", True)]
    finally:
        await d.aclose()


def test_rules_from_the_environment_for_a_dispatcher_given_none(monkeypatch):
    from policyengine.dispatch import ChainDispatcher
    from policyengine.netcheck import rules_from_env
    from policyengine.state import MemoryStateStore

    assert rules_from_env({}).model.allow_private is True
    strict = rules_from_env({"POLICYENGINE_MODEL_HOSTS_ALLOW_PRIVATE": "false",
                             "POLICYENGINE_MODEL_HOSTS_ALLOW": '["10.1.0.0/16"]'})
    strict.model.check("http://10.1.0.7/v1")
    with pytest.raises(OutboundRefused):
        strict.model.check("http://10.2.0.7/v1")
    with pytest.raises(ValueError):
        rules_from_env({"POLICYENGINE_MODEL_HOSTS_ALLOW_PRIVATE": "maybe"})
    monkeypatch.setenv("POLICYENGINE_MODEL_HOSTS_ALLOW_PRIVATE", "false")
    with pytest.raises(OutboundRefused, match="private"):
        ChainDispatcher({"m": _spec("m", "http://10.0.0.5/v1")}, MemoryStateStore(), environ={})


def test_the_service_builds_its_dispatchers_with_the_settings_policy(tmp_path, monkeypatch):
    from policyengine.dsl import compile_sources
    from policyengine.gateway.runtime import _dispatcher_factory
    from policyengine.state import MemoryStateStore

    policy = compile_sources({"m.policy": 'policy "m" version 1\nmodel q { provider vllm base_url env("Q_URL") }\n'
                                          "route default -> q\n"})
    settings = Settings(database_url=f"sqlite:///{tmp_path}/s.db", model_hosts_allow_private=False)
    monkeypatch.setenv("Q_URL", "http://10.0.0.5:8000/v1")
    with pytest.raises(OutboundRefused) as e:
        _dispatcher_factory(MemoryStateStore(), settings)(policy)
    assert e.value.message.startswith("m.policy:2: model `q`")
