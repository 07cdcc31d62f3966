"""What the MCP gateway fronts and how it waits: the upstream servers and the gateway's settings.

An upstream is written `NAME=stdio:COMMAND ARGS...` (the command is split like a shell would,
and started as a subprocess speaking MCP on its stdin/stdout) or `NAME=http(s)://HOST/PATH` (an
MCP server speaking streamable HTTP). The same list can come from a YAML or JSON file:

    upstreams:
      shop: "stdio:python shop_server.py"
      crm:
        url: https://crm.internal/mcp
        headers: {Authorization: "env:CRM_MCP_TOKEN"}   # a secret is only ever an env reference
    hold_wait_s: 30

Names are what conditions see as `mcp.server`; they are 1-64 letters, digits, `_` or `-`.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = ["ConfigError", "McpSettings", "UpstreamSpec", "load_config", "parse_upstream"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ConfigError(ValueError):
    """The gateway's configuration is wrong; the message says what and where."""


class UpstreamSpec(BaseModel):
    """One MCP server behind the gateway: a subprocess over stdio, or a streamable HTTP URL.

    `headers` values (HTTP only) are sent on every request; a value `env:NAME` is read from
    the environment when the connection opens, so a token never sits in a file or a log.
    `trust_read_only_hints` (default true): a tool this server lists with the annotation
    `readOnlyHint: true` (and not `destructiveHint: true`) is taken at its word when
    `McpSettings.commit_before_forward` is `unless_read_only`; false treats every tool of this
    server as one with side effects (for a server whose annotations you do not vouch for)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["stdio", "http"]
    command: list[str] = Field(default_factory=list)
    url: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    headers: dict[str, str] = Field(default_factory=dict)
    trust_read_only_hints: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"upstream name {v!r} must be 1-64 letters, digits, '_' or '-'")
        return v

    @model_validator(mode="after")
    def _target(self) -> UpstreamSpec:
        if self.kind == "stdio" and not self.command:
            raise ValueError(f"upstream {self.name!r}: stdio needs a command (NAME=stdio:COMMAND ARGS...)")
        if self.kind == "http" and not (self.url and self.url.startswith(("http://", "https://"))):
            raise ValueError(f"upstream {self.name!r}: http needs an http:// or https:// URL")
        return self

    def resolved_headers(self) -> dict[str, str]:
        """The headers with `env:NAME` values read from the environment (a missing one is an error)."""
        out = {}
        for k, v in self.headers.items():
            if v.startswith("env:"):
                var = v[4:]
                if var not in os.environ:
                    raise ConfigError(f"upstream {self.name!r}: header {k} names the environment variable {var}, "
                                      "which is not set")
                v = os.environ[var]
            out[k] = v
        return out

    def describe(self) -> str:
        """Where it is, for logs and errors (never a header value)."""
        return f"stdio:{shlex.join(self.command)}" if self.kind == "stdio" else str(self.url)


class McpSettings(BaseModel):
    """The gateway's settings.

    `hold_wait_s`: how long a held tools/call waits for a reviewer before it answers with a
    pending result the client can resume (0: answer at once). `progress_every_s`: how often a
    waiting call sends a progress notification (when the client sent a progress token).
    `confirm_wait_s`: how long the user may take to answer a `confirm by user` question.
    `max_argument_bytes`: the largest arguments object (as JSON) judged; larger is refused.
    `text_max_chars`: how much of the arguments' string values becomes the action's text.
    `fast_path`: an allowed 2026-07-28 tools/call to a 2026-07-28 HTTP upstream skips the SDK's
    server and client machinery (`policyengine.mcpgate.fast`, `policyengine.mcpgate.wire`);
    false: every call goes through the SDK (what the benchmark compares against). The upstream
    side is chosen when the gateway is made; the client-facing side is read per request.
    `commit_before_forward`: when an allowed call's decision row must be durable. Whatever the
    choice, no answer is returned before it is (an answer whose row cannot commit is withheld).
    - `always` (also `true`): before the call is sent, so a tool never runs without its decision
      on record, even if the commit fails or the process dies;
    - `unless_read_only` (the default): `always` for every tool but those its server declares
      read-only (`readOnlyHint: true`, not `destructiveHint: true`, from a server whose hints
      are trusted: `UpstreamSpec.trust_read_only_hints`); for those the row commits while the
      server works on the call, taking the commit off the call's latency. A read cannot change
      anything, and its answer is withheld if the row is lost, so nothing it did goes
      unrecorded but the read itself;
    - `never` (also `false`): every allowed call is sent first and its row commits meanwhile,
      as model calls do (whose upstream calls have no side effects), at the price of a window
      where a tool with side effects ran and its row may be lost.
    `confirm_secret`: the key that signs a confirmation round's `requestState`, as an env
    reference (`env:NAME`), so every replica verifies what another issued; unset, each process
    makes its own (a retry that reaches another replica asks the user again)."""

    model_config = ConfigDict(extra="forbid")

    upstreams: list[UpstreamSpec] = Field(default_factory=list)
    hold_wait_s: float = Field(default=30.0, ge=0, le=3600)
    progress_every_s: float = Field(default=1.0, gt=0, le=60)
    confirm_wait_s: float = Field(default=300.0, gt=0, le=86400)
    max_argument_bytes: int = Field(default=65536, gt=0)
    text_max_chars: int = Field(default=16384, ge=0)
    upstream_timeout_s: float = Field(default=120.0, gt=0)
    fast_path: bool = True
    commit_before_forward: Literal["always", "unless_read_only", "never"] = "unless_read_only"
    confirm_secret: str | None = None

    @field_validator("commit_before_forward", mode="before")
    @classmethod
    def _commit_mode(cls, v: Any) -> Any:
        if v is True:  # the boolean of earlier configurations
            return "always"
        if v is False:
            return "never"
        return v

    def commit_first(self, read_only: bool) -> bool:
        """Whether an allowed call to a tool (read-only as its route says) waits for its
        decision row's commit before it is sent."""
        mode = self.commit_before_forward
        return mode == "always" or (mode == "unless_read_only" and not read_only)

    @field_validator("confirm_secret")
    @classmethod
    def _secret_by_reference(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("env:") and len(v) > 4):
            raise ValueError("confirm_secret must be an environment reference, env:NAME (never the secret itself)")
        return v

    def resolved_confirm_secret(self) -> bytes | None:
        """The confirmation signing key read from the environment; None when not configured.
        Raises ConfigError when the variable is unset or shorter than 32 characters."""
        if self.confirm_secret is None:
            return None
        var = self.confirm_secret[4:]
        value = os.environ.get(var)
        if value is None:
            raise ConfigError(f"confirm_secret names the environment variable {var}, which is not set")
        if len(value) < 32:
            raise ConfigError(f"the confirmation signing key in {var} must be at least 32 characters")
        return value.encode()

    @model_validator(mode="after")
    def _unique(self) -> McpSettings:
        names = [u.name for u in self.upstreams]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"upstream names must be unique: {', '.join(dup)} given more than once")
        return self


def parse_upstream(text: str) -> UpstreamSpec:
    """`NAME=stdio:COMMAND ARGS...` or `NAME=http(s)://...` as an UpstreamSpec. Raises ConfigError."""
    name, sep, target = text.partition("=")
    if not sep or not name or not target:
        raise ConfigError(f"--upstream {text!r}: write NAME=stdio:COMMAND ARGS... or NAME=http://HOST/PATH")
    return _spec(name.strip(), target.strip())


def _spec(name: str, target: Any) -> UpstreamSpec:
    try:
        if isinstance(target, dict):
            data = dict(target)
            if "url" in data:
                data.setdefault("kind", "http")
            elif "command" in data:
                data.setdefault("kind", "stdio")
                if isinstance(data["command"], str):
                    data["command"] = shlex.split(data["command"])
            return UpstreamSpec(name=name, **data)
        if not isinstance(target, str):
            raise ConfigError(f"upstream {name!r}: expected a string or a mapping, got {type(target).__name__}")
        if target.startswith("stdio:"):
            return UpstreamSpec(name=name, kind="stdio", command=shlex.split(target[6:]))
        if target.startswith(("http://", "https://")):
            return UpstreamSpec(name=name, kind="http", url=target)
        raise ConfigError(f"upstream {name!r}: {target!r} is neither stdio:COMMAND nor an http(s):// URL")
    except ValidationError as exc:
        raise ConfigError("; ".join(e["msg"].removeprefix("Value error, ") for e in exc.errors()))
    except ValueError as exc:  # shlex: an unterminated quote
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"upstream {name!r}: {exc}")


def load_config(path: str | Path) -> McpSettings:
    """The settings in a YAML (or JSON) file; `upstreams` is a mapping of name -> target. Raises ConfigError."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{p}: cannot read the MCP gateway config: {exc}")
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the MCP gateway config must be a mapping")
    ups = data.pop("upstreams", {}) or {}
    if not isinstance(ups, dict):
        raise ConfigError(f"{p}: upstreams must be a mapping of name -> stdio:COMMAND or URL")
    specs = [_spec(str(k), v) for k, v in ups.items()]
    try:
        return McpSettings(upstreams=specs, **data)
    except ValidationError as exc:
        raise ConfigError(f"{p}: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
