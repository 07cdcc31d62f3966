"""Outbound URL policy: may the service send a request to this URL? (SSRF defence)

Every request the service sends on somebody's behalf (a model's `base_url`, a webhook or
Teams target, an application's `callback_url`) is checked here first. The check:

1. parses the URL: the scheme must be `http` or `https` and there must be a host; an
   authority with a backslash, whitespace, a control character or a percent sign is refused
   (other URL parsers read such hosts differently);
2. finds the addresses: a literal IP (also the legacy IPv4 forms `2852039166`, `0xa9fea9fe`,
   `169.254.43518`, and IPv4 inside IPv6: `::ffff:a.b.c.d`, `64:ff9b::a.b.c.d`) is taken as
   written; a name is resolved with `getaddrinfo` at check time, and **every** address it
   resolves to is checked;
3. classifies each address (`AddressClass`) and applies the `OutboundPolicy`:

   * always refused: cloud metadata (169.254.169.254, 169.254.170.2, fd00:ec2::254,
     100.100.100.200, and the names `metadata.google.internal`, `metadata.goog`, ...),
     link-local (169.254.0.0/16, fe80::/10), unspecified (0.0.0.0, ::), multicast, and
     reserved / non-global special ranges (240.0.0.0/4, broadcast, documentation ranges);
   * loopback (127.0.0.0/8, ::1, `localhost`) and private (10/8, 172.16/12, 192.168/16,
     100.64/10, fc00::/7): only when the policy allows private addresses, or the host or
     address is on its allowlist;
   * public: when the policy allows public addresses (models and webhooks by default), or the
     host or address is on its allowlist (callbacks).

A refusal is an `OutboundRefused` (code `outbound_refused`) whose `reason` is one of
`REASONS`; a name that does not resolve is an `OutboundUnresolved` (code
`outbound_unresolved`, a subclass): the caller decides whether that is retriable. Messages
never contain the URL's userinfo or query string.

Guarantees and limits: the check is made on the addresses resolved *at check time*; the
connection made afterwards resolves again (a DNS answer that changes in between, i.e. DNS
rebinding, is not caught here). Redirects are not followed by the call sites (they pass
`follow_redirects=False`), so a 3xx cannot lead a checked request elsewhere.

This module is a bottom layer: it imports only the standard library and `policyengine.errors`.
"""

from __future__ import annotations

import asyncio
import fnmatch
import ipaddress
import json
import os
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

from policyengine.errors import PolicyEngineError

__all__ = [
    "ALWAYS_REFUSED",
    "REASONS",
    "AddressClass",
    "OutboundPolicy",
    "OutboundRefused",
    "OutboundRules",
    "OutboundUnresolved",
    "Purpose",
    "Target",
    "acheck_url",
    "build_rules",
    "check_url",
    "classify_ip",
    "literal_class",
    "parse_target",
    "redact_url",
    "rules_from_env",
]

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Purpose = Literal["model", "webhook", "callback"]


class AddressClass(StrEnum):
    """What kind of address a host is; `public` is the only class that is globally routable."""

    public = "public"
    private = "private"
    loopback = "loopback"
    link_local = "link_local"
    metadata = "metadata"
    multicast = "multicast"
    unspecified = "unspecified"
    reserved = "reserved"


#: Classes refused whatever the policy or its allowlist says.
ALWAYS_REFUSED = frozenset({AddressClass.metadata, AddressClass.link_local, AddressClass.multicast,
                            AddressClass.unspecified, AddressClass.reserved})

#: Every `OutboundRefused.reason`.
REASONS = ("invalid", "scheme", "unresolved", "not_allowlisted", *(c.value for c in AddressClass))

METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
    "169.254.170.2",  # AWS ECS task metadata
    "fd00:ec2::254",  # AWS IMDS over IPv6 (inside fc00::/7, so checked before "private")
    "100.100.100.200",  # Alibaba Cloud (inside 100.64.0.0/10)
))
METADATA_NAMES = frozenset({
    "metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal",
    "metadata.azure.internal", "metadata.platformequinix.com",
})
_PRIVATE_NETS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7",
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_BAD_AUTHORITY = re.compile(r"[\\\s%\x00-\x1f\x7f]")
_BAD_NETLOC = re.compile(r"[\\\s\x00-\x1f\x7f]")
_LEGACY_V4 = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.IGNORECASE)


class OutboundRefused(PolicyEngineError):
    """The service will not send a request to this URL.

    `reason` is one of `REASONS` (`scheme`, `metadata`, `private`, ...), `purpose` what the URL
    was for, `url` the URL without userinfo and query; the message says why and which setting
    would allow it when one can.
    """

    code = "outbound_refused"

    def __init__(self, message: str, *, reason: str, url: str, purpose: str, code: str | None = None,
                 span: object | None = None) -> None:
        super().__init__(message, code=code, span=span)
        self.reason = reason
        self.url = url
        self.purpose = purpose


class OutboundUnresolved(OutboundRefused):
    """The URL's host name did not resolve at check time (reason `unresolved`): nothing was checked."""

    code = "outbound_unresolved"


def redact_url(url: str) -> str:
    """`url` without its userinfo (`user:pass@`), query and fragment, for messages and logs."""
    try:
        p = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    netloc = p.netloc.rsplit("@", 1)[-1]
    return f"{p.scheme}://{netloc}{p.path}" if p.scheme else url.split("?", 1)[0].split("#", 1)[0][:80]


def _unwrap(ip: IP) -> IP:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def classify_ip(ip: IP | str) -> AddressClass:
    """The class of one address (IPv4 inside IPv6 is classified as the IPv4 address it carries)."""
    addr = _unwrap(ipaddress.ip_address(ip) if isinstance(ip, str) else ip)
    if addr in METADATA_ADDRESSES:
        return AddressClass.metadata
    if addr.is_unspecified:
        return AddressClass.unspecified
    if addr.is_loopback:
        return AddressClass.loopback
    if addr.is_link_local:
        return AddressClass.link_local
    if addr.is_multicast:
        return AddressClass.multicast
    if any(addr in n for n in _PRIVATE_NETS if n.version == addr.version):
        return AddressClass.private
    if not addr.is_global:
        return AddressClass.reserved
    return AddressClass.public


def _literal_ip(host: str) -> IP | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_V4.match(host):  # what inet_aton (and so getaddrinfo) accepts: 2852039166, 0xa9fea9fe, 10.1
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


@dataclass(frozen=True)
class Target:
    """A parsed outbound URL: scheme, host (lower case, no trailing dot), port, and the literal IP when it is one."""

    url: str
    scheme: str
    host: str
    port: int
    ip: IP | None


def parse_target(url: str, *, purpose: str = "request") -> Target:
    """Parse `url` for an outbound request; `OutboundRefused` (reason `invalid` or `scheme`) when it is not
    an http(s) URL with a host that every parser reads the same way."""
    safe = redact_url(url)
    try:
        p = urlsplit(url.strip())
        port = p.port
    except ValueError as exc:
        raise OutboundRefused(f"{purpose} URL {safe!r} is not a valid URL ({exc})", reason="invalid", url=safe,
                              purpose=purpose) from None
    scheme = p.scheme.lower()
    if scheme not in ("http", "https"):
        raise OutboundRefused(f"{purpose} URL {safe!r} must be http:// or https://, not {scheme + '://' if scheme else 'schemeless'}",
                              reason="scheme", url=safe, purpose=purpose)
    authority = p.netloc.rsplit("@", 1)[-1]
    if p.netloc.count("@") > 1:
        raise OutboundRefused(f"{purpose} URL {safe!r} has more than one `@`", reason="invalid", url=safe,
                              purpose=purpose)
    host = (p.hostname or "").rstrip(".").lower()
    bracketed = authority.startswith("[")
    raw_authority = re.split(r"[/?#]", url.strip().split("://", 1)[-1], maxsplit=1)[0]  # before urlsplit drops tabs
    if _BAD_NETLOC.search(p.netloc) or _BAD_NETLOC.search(raw_authority):
        raise OutboundRefused(f"{purpose} URL {safe!r} has a backslash, whitespace or control character in its "
                              "authority", reason="invalid", url=safe, purpose=purpose)
    if not host or _BAD_AUTHORITY.search(authority if not bracketed else authority.split("]", 1)[-1]):
        raise OutboundRefused(f"{purpose} URL {safe!r} has no usable host", reason="invalid", url=safe,
                              purpose=purpose)
    if bracketed and _BAD_AUTHORITY.search(host.split("%", 1)[0]):
        raise OutboundRefused(f"{purpose} URL {safe!r} has no usable host", reason="invalid", url=safe,
                              purpose=purpose)
    ip = _literal_ip(host.split("%", 1)[0]) if bracketed else _literal_ip(host)
    if bracketed and ip is None:
        raise OutboundRefused(f"{purpose} URL {safe!r} has an invalid IPv6 address", reason="invalid", url=safe,
                              purpose=purpose)
    return Target(url=safe, scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80), ip=ip)


def literal_class(url: str) -> AddressClass | None:
    """The class of `url`'s host as far as it can be known without DNS: a literal IP's class, `metadata` for a
    metadata service's name, `loopback` for `localhost` (and `*.localhost`), else None (a name: resolved at
    check time). `OutboundRefused` when the URL itself is refused (reason `invalid` or `scheme`)."""
    t = parse_target(url)
    if t.ip is not None:
        return classify_ip(t.ip)
    if t.host in METADATA_NAMES:
        return AddressClass.metadata
    if t.host == "localhost" or t.host.endswith(".localhost"):
        return AddressClass.loopback
    return None


@dataclass(frozen=True)
class OutboundPolicy:
    """Where requests for one `purpose` may go.

    `allow_public` / `allow_private` admit every public / every private-or-loopback address.
    `allow` entries widen that: a CIDR or an IP (`10.0.0.0/8`, `fd12::/16`, `10.1.2.3`), a host name
    or an fnmatch pattern of names (`models.internal`, `*.corp.example`), or the words `public` and
    `private`. An allowlisted name admits whatever private or public address it resolves to, never
    an `ALWAYS_REFUSED` one. `setting` names the setting to widen, for messages. A malformed entry
    is a ValueError at construction.
    """

    purpose: Purpose
    allow_public: bool = True
    allow_private: bool = False
    allow: tuple[str, ...] = ()
    setting: str = ""
    _nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=(), init=False, repr=False,
                                                                             compare=False)
    _names: tuple[str, ...] = field(default=(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        nets, names = [], []
        public, private = self.allow_public, self.allow_private
        for raw in self.allow:
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            if entry == "public":
                public = True
                continue
            if entry == "private":
                private = True
                continue
            try:
                nets.append(ipaddress.ip_network(entry, strict=False))
                continue
            except ValueError:
                pass
            if "/" in entry or not re.fullmatch(r"[a-z0-9*?._\-\[\]]+", entry):
                raise ValueError(f"{self.setting or 'allowlist'}: {raw!r} is neither a CIDR, an IP address nor a host name")
            names.append(entry)
        object.__setattr__(self, "allow_public", public)
        object.__setattr__(self, "allow_private", private)
        object.__setattr__(self, "_nets", tuple(nets))
        object.__setattr__(self, "_names", tuple(names))

    # ------------------------------------------------------------------ decisions
    def name_allowed(self, host: str) -> bool:
        """True when `host` matches a name entry of the allowlist."""
        return any(fnmatch.fnmatchcase(host, pat) for pat in self._names)

    def could_pass(self, target: Target) -> bool:
        """False when no address could make `target` acceptable (so there is no need to resolve it)."""
        return bool(self.allow_public or self.allow_private or self._nets or self.name_allowed(target.host))

    def verdict(self, target: Target, addresses: Iterable[IP]) -> None:
        """Accept (return None) or refuse (`OutboundRefused`) `target` reached at `addresses` (all of them)."""
        named = target.ip is None and self.name_allowed(target.host)
        for ip in addresses:
            cls = classify_ip(ip)
            if cls in ALWAYS_REFUSED:
                self._refuse(target, cls, ip)
            if named or any(_unwrap(ip) in n for n in self._nets if n.version == _unwrap(ip).version):
                continue
            if cls is AddressClass.public and self.allow_public:
                continue
            if cls in (AddressClass.private, AddressClass.loopback) and self.allow_private:
                continue
            self._refuse(target, cls, ip)

    def _refuse(self, target: Target, cls: AddressClass, ip: IP) -> None:
        where = target.host if target.ip is not None else f"{target.host} ({ip})"
        if cls in ALWAYS_REFUSED:
            why = {AddressClass.metadata: "a cloud metadata service", AddressClass.link_local: "link-local",
                   AddressClass.multicast: "multicast", AddressClass.unspecified: "unspecified",
                   AddressClass.reserved: "a reserved address"}[cls]
            msg = f"{self.purpose} URL {target.url!r}: {where} is {why}; requests there are always refused"
        else:
            what = {AddressClass.public: "a public address", AddressClass.private: "a private address",
                    AddressClass.loopback: "a loopback address"}[cls]
            how = f" (allow it in {self.setting})" if self.setting else ""
            msg = f"{self.purpose} URL {target.url!r}: {where} is {what}, not allowed for {self.purpose} requests{how}"
        raise OutboundRefused(msg, reason=cls.value, url=target.url, purpose=self.purpose)

    def _early(self, target: Target) -> tuple[IP, ...] | None:
        """The addresses known without DNS (a literal IP), after the name-level refusals; None: resolve."""
        if target.host in METADATA_NAMES:
            raise OutboundRefused(f"{self.purpose} URL {target.url!r}: {target.host} is a cloud metadata service; "
                                  "requests there are always refused", reason="metadata", url=target.url,
                                  purpose=self.purpose)
        if target.ip is not None:
            return (target.ip,)
        if target.host == "localhost" or target.host.endswith(".localhost"):
            return (ipaddress.ip_address("127.0.0.1"),)
        if not self.could_pass(target):
            how = f" (allow it in {self.setting})" if self.setting else ""
            raise OutboundRefused(f"{self.purpose} URL {target.url!r}: host {target.host} is not on the "
                                  f"{self.purpose} allowlist{how}", reason="not_allowlisted", url=target.url,
                                  purpose=self.purpose)
        return None

    def _unresolved(self, target: Target, exc: OSError) -> OutboundUnresolved:
        return OutboundUnresolved(f"{self.purpose} URL {target.url!r}: cannot resolve {target.host} ({exc})",
                                  reason="unresolved", url=target.url, purpose=self.purpose)

    def check_static(self, url: str) -> Target:
        """What can be checked without DNS: the URL, a literal IP's addresses, metadata names, and whether the
        host can pass the allowlist at all. A name that may pass is accepted here and must be checked again
        (`check` / `acheck`) right before the request is sent. `OutboundRefused` when refused."""
        target = parse_target(url, purpose=self.purpose)
        addrs = self._early(target)
        if addrs is not None:
            self.verdict(target, addrs)
        return target

    def check(self, url: str) -> Target:
        """Check `url`, resolving its host now (blocking); the parsed `Target` when it may be requested.
        `OutboundRefused` when not; `OutboundUnresolved` when its name does not resolve."""
        target = parse_target(url, purpose=self.purpose)
        addrs = self._early(target)
        if addrs is None:
            try:
                infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise self._unresolved(target, exc) from None
            addrs = _addresses(infos)
        self.verdict(target, addrs)
        return target

    async def acheck(self, url: str) -> Target:
        """`check` with the name resolved through the running loop (not blocking it)."""
        target = parse_target(url, purpose=self.purpose)
        addrs = self._early(target)
        if addrs is None:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(target.host, target.port,
                                                                     type=socket.SOCK_STREAM)
            except OSError as exc:
                raise self._unresolved(target, exc) from None
            addrs = _addresses(infos)
        self.verdict(target, addrs)
        return target


def _addresses(infos: list[tuple]) -> tuple[IP, ...]:  # type: ignore[type-arg]
    out: list[IP] = []
    for info in infos:
        host = str(info[4][0]).split("%", 1)[0]
        ip = ipaddress.ip_address(host)
        if ip not in out:
            out.append(ip)
    return tuple(out)


def check_url(url: str, policy: OutboundPolicy) -> Target:
    """`policy.check(url)`: the parsed target, or `OutboundRefused` / `OutboundUnresolved`."""
    return policy.check(url)


async def acheck_url(url: str, policy: OutboundPolicy) -> Target:
    """`policy.acheck(url)`: the parsed target, or `OutboundRefused` / `OutboundUnresolved`."""
    return await policy.acheck(url)


@dataclass(frozen=True)
class OutboundRules:
    """The outbound policies for model calls, webhooks (and Teams) and application callbacks."""

    model: OutboundPolicy
    webhook: OutboundPolicy
    callback: OutboundPolicy


def build_rules(*, model_allow_private: bool = True, model_allow: Iterable[str] = (), webhook_allow: Iterable[str] = (),
                callback_allow: Iterable[str] = ()) -> OutboundRules:
    """The policies the settings `model_hosts_allow_private`, `model_hosts_allow`, `webhook_hosts_allow` and
    `callback_hosts_allow` describe: models may use public addresses (and private / loopback ones while
    `model_allow_private`), webhooks public ones, callbacks only their allowlist; each plus its allowlist.
    ValueError for a malformed allowlist entry."""
    return OutboundRules(
        model=OutboundPolicy("model", allow_public=True, allow_private=model_allow_private, allow=tuple(model_allow),
                             setting="POLICYENGINE_MODEL_HOSTS_ALLOW (or POLICYENGINE_MODEL_HOSTS_ALLOW_PRIVATE)"),
        webhook=OutboundPolicy("webhook", allow_public=True, allow_private=False, allow=tuple(webhook_allow),
                               setting="POLICYENGINE_WEBHOOK_HOSTS_ALLOW"),
        callback=OutboundPolicy("callback", allow_public=False, allow_private=False, allow=tuple(callback_allow),
                                setting="POLICYENGINE_CALLBACK_HOSTS_ALLOW"),
    )


ENV_VARS = ("POLICYENGINE_MODEL_HOSTS_ALLOW_PRIVATE", "POLICYENGINE_MODEL_HOSTS_ALLOW",
            "POLICYENGINE_WEBHOOK_HOSTS_ALLOW", "POLICYENGINE_CALLBACK_HOSTS_ALLOW")
_env_cache: dict[tuple[str | None, ...], OutboundRules] = {}


def _env_list(v: str | None) -> tuple[str, ...]:
    if not v or not v.strip():
        return ()
    s = v.strip()
    if s.startswith("["):
        return tuple(str(x) for x in json.loads(s))
    return tuple(p.strip() for p in s.split(",") if p.strip())


def rules_from_env(environ: Mapping[str, str] | None = None) -> OutboundRules:
    """`build_rules` from the variables `ENV_VARS` in `environ` (default `os.environ`), parsed as the settings
    parse them (a boolean; comma-separated or JSON lists), for call sites given no policy. ValueError for a
    malformed value. Cached per distinct values."""
    env = os.environ if environ is None else environ
    key = tuple(env.get(k) for k in ENV_VARS)
    rules = _env_cache.get(key)
    if rules is None:
        flag = (key[0] or "true").strip().lower()
        if flag not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
            raise ValueError(f"POLICYENGINE_MODEL_HOSTS_ALLOW_PRIVATE must be true or false, not {key[0]!r}")
        rules = build_rules(model_allow_private=flag in ("1", "true", "yes", "on"), model_allow=_env_list(key[1]),
                            webhook_allow=_env_list(key[2]), callback_allow=_env_list(key[3]))
        if len(_env_cache) > 32:
            _env_cache.clear()
        _env_cache[key] = rules
    return rules
