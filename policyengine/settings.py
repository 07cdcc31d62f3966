"""Service settings: environment variables `POLICYENGINE_*` and/or a settings file.

Precedence (highest first): explicit arguments, environment, the settings file
(`POLICYENGINE_SETTINGS_FILE` or `--settings`; TOML, YAML or JSON), defaults.
Secrets are never settings values: the settings name environment variables.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

if TYPE_CHECKING:
    from policyengine.netcheck import OutboundRules

DEFAULT_POLICY_DIR = "policies/support-desk"  # the full example set of the repository


def is_loopback(host: str) -> bool:
    """Whether binding `host` serves this machine only: `localhost`, 127.0.0.0/8 or ::1
    (`0.0.0.0`, `::`, any other address or name is reachable from elsewhere)."""
    import ipaddress

    h = host.strip().strip("[]").lower()
    if h == "localhost":
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def auth_disabled_problem(settings: Settings) -> str | None:
    """Why these settings must not start (`auth_disabled` on a bind reachable from other machines),
    or None."""
    if settings.auth_disabled and not is_loopback(settings.host):
        return (f"auth_disabled is set and the service would listen on {settings.host!r}, which is not a "
                "loopback address: every caller would be an admin of tenant "
                f"{settings.dev_tenant!r}. auth_disabled is for development on loopback only "
                "(--host 127.0.0.1); create API keys instead (policyengine keys create)")
    return None


class SeedKey(BaseModel):
    """An API key created at start from the environment (dev / embedded default).

    `token_env` names the environment variable holding the token (never the token itself).
    """

    token_env: str
    tenant: str
    roles: list[Literal["app", "reviewer", "admin"]] = Field(min_length=1)
    subject: str = "seeded"
    groups: list[str] = Field(default_factory=list)
    attributes: dict[str, Any] = Field(default_factory=dict)


class _FileSource(PydanticBaseSettingsSource):
    """Reads the settings file named by POLICYENGINE_SETTINGS_FILE (or passed explicitly)."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if not self.path:
            return {}
        return load_settings_file(self.path)


def load_settings_file(path: str | Path) -> dict[str, Any]:
    """The settings mapping in a `.toml` (its `[policyengine]` table when it has one), `.yaml`/`.yml`
    or `.json` file.

    ValueError when the file is missing, has another suffix, is not valid TOML or JSON, or
    does not hold a mapping (a YAML syntax error propagates as `yaml.YAMLError`).
    """
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"settings file not found: {p}")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
            data = data.get("policyengine", data)
        elif p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"settings file {p} must end in .toml, .yaml, .yml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"settings file {p} is not valid: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"settings file {p} must hold a mapping of settings")
    return data


def _split_list(v: Any) -> Any:
    if isinstance(v, str):
        s = v.strip()
        if s.startswith("["):
            return json.loads(s)
        return [p.strip() for p in s.split(",") if p.strip()]
    return v


class OutboundHosts(BaseModel):
    """Where the service may send requests (SSRF defence; `policyengine.netcheck` applies them).

    Cloud metadata, link-local, unspecified, multicast and reserved addresses, and URLs that are
    not http(s), are refused whatever these say. Each `*_hosts_allow` list holds CIDRs or IPs
    (`10.0.0.0/8`, `fd12::/16`), host names or fnmatch patterns (`*.corp.example`), or the words
    `public` / `private` (every public / every private-or-loopback address); a comma-separated
    list or a JSON list in the environment. A malformed entry fails validation.
    """

    model_hosts_allow_private: bool = Field(
        True, description="model base_urls may be private or loopback addresses (self-hosted models live there); "
                          "false: only public addresses and model_hosts_allow")
    model_hosts_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="extra hosts/CIDRs a model base_url may point at")
    webhook_hosts_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="webhook and Teams targets may be public addresses, plus these "
                                          "hosts/CIDRs (e.g. an internal receiver)")
    callback_hosts_allow: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="an application's callback_url must be one of these hosts/CIDRs "
                                          "(empty: every callback_url is refused; `public` admits any public host)")

    @field_validator("model_hosts_allow", "webhook_hosts_allow", "callback_hosts_allow", mode="before")
    @classmethod
    def _split_hosts(cls, v: Any) -> Any:
        return _split_list(v)

    @model_validator(mode="after")
    def _check_hosts(self) -> OutboundHosts:
        self.outbound_rules()  # a malformed entry is an error at start
        return self

    def outbound_rules(self) -> OutboundRules:
        """The three `OutboundPolicy`s these settings describe (`policyengine.netcheck.build_rules`)."""
        from policyengine.netcheck import build_rules

        return build_rules(model_allow_private=self.model_hosts_allow_private, model_allow=self.model_hosts_allow,
                           webhook_allow=self.webhook_hosts_allow, callback_allow=self.callback_hosts_allow)


class OutboundSettings(OutboundHosts, BaseSettings):
    """Only the outbound-host settings, read the way `Settings` reads them (environment `POLICYENGINE_*`,
    then the file named by `POLICYENGINE_SETTINGS_FILE`), for call sites that are not given a `Settings`."""

    # An empty variable is an unset one: docker-compose's `${X:-}` and Kubernetes pass "" for values
    # nobody filled in (an empty SMTP username must not turn SMTP AUTH on).
    model_config = SettingsConfigDict(env_prefix="POLICYENGINE_", extra="ignore", env_ignore_empty=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, the environment, then the settings file named by `POLICYENGINE_SETTINGS_FILE`."""
        return (init_settings, env_settings, _FileSource(settings_cls, os.environ.get("POLICYENGINE_SETTINGS_FILE")))


_OUTBOUND_ENV = ("POLICYENGINE_MODEL_HOSTS_ALLOW_PRIVATE", "POLICYENGINE_MODEL_HOSTS_ALLOW",
                 "POLICYENGINE_WEBHOOK_HOSTS_ALLOW", "POLICYENGINE_CALLBACK_HOSTS_ALLOW", "POLICYENGINE_SETTINGS_FILE")
_outbound_cache: dict[tuple[str | None, ...], OutboundRules] = {}


def default_outbound_rules() -> OutboundRules:
    """The outbound policies from the environment (and `POLICYENGINE_SETTINGS_FILE`), for call sites not given
    any. Recomputed whenever one of those variables changes (a settings file's content is read once)."""
    key = tuple(os.environ.get(k) for k in _OUTBOUND_ENV)
    rules = _outbound_cache.get(key)
    if rules is None:
        rules = OutboundSettings().outbound_rules()
        if len(_outbound_cache) > 32:
            _outbound_cache.clear()
        _outbound_cache[key] = rules
    return rules


class Settings(OutboundHosts, BaseSettings):
    """Every setting of the service, validated at construction (`extra="forbid"`: an unknown name is an error).

    Sources, highest first: arguments, `POLICYENGINE_*` environment variables, the settings
    file, defaults. The database URL and the `dispatch` overrides are checked here, so a bad
    value fails at start rather than at the first request.
    """

    # An empty variable is an unset one: docker-compose's `${X:-}` and Kubernetes pass "" for values
    # nobody filled in (an empty SMTP username must not turn SMTP AUTH on).
    model_config = SettingsConfigDict(env_prefix="POLICYENGINE_", extra="forbid", validate_default=True,
                                      env_ignore_empty=True)

    # where things are
    database_url: str = Field("sqlite:///policyengine.db",
                              description="sqlite:///path.db (embedded default) or postgresql://user@host/db")
    redis_url: str | None = Field(None, description="Redis for cooldowns/stickiness shared by replicas; "
                                                    "unset = in-memory state (one process)")
    redis_prefix: str = Field("policyengine:", min_length=1, max_length=100,
                              description="key prefix in Redis; give each deployment sharing one Redis its own")
    limits_redis_url: str | None = Field(None, description="Redis for the limit and budget counters; unset = "
                                                           "redis_url (and without either: this process only)")
    limits_default_completion_tokens: int = Field(
        256, ge=1, description="the answer length a limit reserves for a request that sets no max_tokens")
    policy_path: Annotated[list[str], NoDecode] = Field(default_factory=lambda: [DEFAULT_POLICY_DIR],
                                   description="policy directories/files (a comma-separated list in the env)")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    workers: int = Field(1, ge=1)

    # the decision log
    redact_fields: Annotated[list[str], NoDecode] = Field(default_factory=list,
                                     description="paths (fields.card.number) or key names (email) hashed before logging")
    redaction_salt_env: str | None = Field(None, description="env var holding an HMAC salt for redaction hashes")
    log_max_batch: int = Field(512, ge=1, le=100_000)
    sqlite_synchronous: Literal["FULL", "NORMAL", "EXTRA"] = "FULL"
    sqlite_wal_max_mb: float = Field(16.0, gt=0, le=100_000, description="SQLite: the decision log's WAL starts "
                                     "over before it reaches this size (a PASSIVE checkpoint of the writer between "
                                     "two batches); the file stays within about this size")
    log_follow_up_delay_s: float = Field(0.05, ge=0, le=10, description="how long a row nobody waits for (a "
                                         "streamed chat's outcome) may wait to ride along with the next commit; "
                                         "0 commits each on its own")
    sqlite_fsync_on_loop: bool = Field(True, description="SQLite FULL/EXTRA: a lone decision row's commit (its "
                                       "fsync) may run on the event loop while at most two HTTP requests are in "
                                       "flight; false: always in the decision log's writer thread")
    migrate_on_start: bool = True

    # auth
    auth_disabled: bool = Field(False, description="DEV ONLY: every request is the `dev` tenant with all roles")
    seed_keys: list[SeedKey] = Field(default_factory=list)
    dev_tenant: str = "dev"
    key_cache_ttl_s: float = Field(5.0, ge=0, description="how long an authenticated key is cached in-process")
    gc_gen0_threshold: int = Field(20_000, ge=0, description="young-generation GC threshold once the service has "
                                   "started (CPython's default is 700; 0 leaves the interpreter's settings alone)")
    console_login_failures: str = Field(
        "10/minute", description="failed console logins allowed per client address in a moving window "
        "(a `limits` rate: '10/minute', '30/hour'); past it the login page answers 429 with Retry-After")
    key_revocation_poll_s: float = Field(1.0, ge=0, description="how often the service checks for keys revoked "
                                         "elsewhere (CLI, other replicas) and clears its key cache; 0 disables")

    # gateway
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_json_depth: int = Field(32, ge=2, le=512, description="deepest nesting of objects and arrays accepted "
                                "in a request body (the body itself is level 1); deeper bodies get 400")
    default_use_case: str | None = None
    verify_timeout_s: float = Field(120, gt=0)
    # tool calls a model returns are judged as actions (policyengine.gateway.tools)
    tool_call_max_argument_bytes: int = Field(64 * 1024, ge=2, description="larger tool-call arguments are denied")
    tool_calls_denied: Literal["note", "remove"] = Field(
        "note", description="a denied or held tool call is removed; 'note' also says so in the message content")
    strip_denied_tools: bool = Field(
        False, description="remove from the request the tools the standing orders always deny")
    # held chats (policyengine.gateway.paths): how long a request may wait for its reviewer
    chat_hold_max_wait_s: float = Field(300, ge=0, description="cap on X-PolicyEngine-Hold-Wait")
    chat_hold_keepalive_s: float = Field(10, gt=0, description="SSE comment interval while a stream waits")
    dispatch: dict[str, Any] = Field(default_factory=dict,
                                     description="DispatchSettings overrides (max_attempts, deadline, breaker...)")
    # provider keys without restarts (policyengine.gateway.secrets): loaded at start, on SIGHUP, on change
    secrets_file: str | None = Field(None, description="a NAME=value file (dotenv) or a directory of files named "
                                                       "after variables, loaded into the environment")
    secrets_poll_s: float = Field(2.0, ge=0, description="how often the secrets file is checked for changes "
                                                         "(0: only at start and on SIGHUP)")
    # tracing (policyengine.tracing): OpenTelemetry spans, exported over OTLP/HTTP when an endpoint is set
    otel_endpoint: str | None = Field(None, description="OTLP/HTTP endpoint (default: $OTEL_EXPORTER_OTLP_ENDPOINT; "
                                                        "unset: no tracing)")
    otel_service_name: str = Field("policyengine", min_length=1, max_length=200)

    # settings file (read by settings_customise_sources)
    settings_file: str | None = None

    @field_validator("policy_path", "redact_fields", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            s = v.strip()
            if s.startswith("["):
                return json.loads(s)
            return [p.strip() for p in s.split(",") if p.strip()]
        return v

    @field_validator("console_login_failures")
    @classmethod
    def _rate(cls, v: str) -> str:
        from limits import parse

        try:
            parse(v)
        except ValueError:
            raise ValueError(f"{v!r} is not a rate: write a count per period, such as '10/minute' or '30/hour'")
        return v

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        from policyengine.store.db import backend

        backend(v)  # raises a clear error for an unsupported URL
        return v

    @field_validator("dispatch")
    @classmethod
    def _dispatch(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            from policyengine.dispatch.settings import DispatchSettings
        except ImportError:  # pragma: no cover
            return v
        DispatchSettings.model_validate(v)  # a clear error at start, not at the first request
        return v

    @model_validator(mode="after")
    def _check(self) -> Settings:
        for k in self.seed_keys:
            if not k.token_env:
                raise ValueError("seed_keys[].token_env must name an environment variable")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Pydantic hook: arguments, then the environment, then the settings file (the `settings_file`
        argument or `POLICYENGINE_SETTINGS_FILE`), then file secrets; `.env` files are not read."""
        path = None
        init = getattr(init_settings, "init_kwargs", {}) or {}
        path = init.get("settings_file") or os.environ.get("POLICYENGINE_SETTINGS_FILE")
        return (init_settings, env_settings, _FileSource(settings_cls, path), file_secret_settings)

    def redaction_salt(self) -> str | None:
        """The HMAC salt for redaction hashes, read now from the variable `redaction_salt_env` names;
        None when no variable is named or it is unset."""
        return os.environ.get(self.redaction_salt_env) if self.redaction_salt_env else None

    def public_dict(self) -> dict[str, Any]:
        """Settings safe to show (URLs with passwords masked)."""
        from sqlalchemy.engine import make_url

        d = self.model_dump(mode="json")
        for k in ("database_url", "redis_url"):
            if d.get(k):
                try:
                    d[k] = make_url(d[k]).render_as_string(hide_password=True)
                except Exception:
                    d[k] = "***"
        return d
