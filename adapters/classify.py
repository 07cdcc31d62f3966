"""Upstream error classification: retry, failover or fatal, with rules as data.

`classify_error(status, headers, body, provider=None)` turns what a server sent
(an HTTP status, its headers, its body in whatever envelope that server uses, or
an error event inside an SSE stream) into a `Classification`. The decisions live
in `classifier_rules.yaml` next to this file; users prepend their own rules
(`ClassifierRule` objects, or a YAML/JSON file via `load_rules`).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

ErrorClass = Literal["retry", "failover", "fatal"]

#: Reasons whose cause is the credential, not the model: rotate to the model's next key.
KEY_SCOPED_REASONS = frozenset(
    {"auth_invalid", "auth_expired", "permission_denied", "quota_exhausted", "rate_limited", "key_missing"}
)
#: Reasons that say the request is too long for this model's context window.
CONTEXT_REASONS = frozenset({"context_length_exceeded"})
#: Reasons that say this model cannot serve this request at all (a capability it lacks): next model.
CAPABILITY_REASONS = frozenset({"capability_missing"})
#: Sent inside a 200 event stream instead of a chunk: an OpenAI-style `error` event, or a
#: Responses-style `response.failed` (its error under `response.error`).
STREAM_ERROR_EVENTS = frozenset({"error", "response.failed"})

BUILTIN_RULES_FILE = Path(__file__).with_name("classifier_rules.yaml")


class Classification(BaseModel):
    model_config = ConfigDict(frozen=True)

    error_class: ErrorClass
    reason: str
    retry_after: float | None = None  # seconds the upstream asked us to wait
    rule: str | None = None  # name of the rule that matched
    message: str | None = None  # upstream message, for logs (never contains a key)
    #: same-target retries before `error_class` applies (a generic 500: once, then failover)
    retries: int = 0

    @property
    def key_scoped(self) -> bool:
        return self.reason in KEY_SCOPED_REASONS


class ClassifierRule(BaseModel):
    """One classification rule. Every given matcher must match (regexes: case-insensitive search)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = "user-rule"
    providers: list[str] | None = None
    status: list[int | str | None] | None = None  # 429, "5xx", "4xx", null (no HTTP status)
    code: str | None = None
    type: str | None = None
    message: str | None = None
    detail: str | None = None
    error_class: ErrorClass = Field(alias="class")
    reason: str = Field(min_length=1, max_length=80)
    retry_after: float | None = Field(default=None, ge=0)  # default when the upstream gave none
    #: a failover-class error worth trying again on the same target first (a generic 500)
    retries: int = Field(default=0, ge=0, le=5)

    @field_validator("code", "type", "message", "detail")
    @classmethod
    def _valid_regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {v!r}: {exc}") from exc
        return v

    @field_validator("status")
    @classmethod
    def _valid_status(cls, v: list[int | str | None] | None) -> list[int | str | None] | None:
        for s in v or ():
            if isinstance(s, str) and not re.fullmatch(r"[1-5]xx", s):
                raise ValueError(f"status must be an integer, '4xx'-style class or null, got {s!r}")
        return v


class ErrorFacts(BaseModel):
    """What could be read out of an error response, whatever its envelope."""

    status: int | None = None
    codes: list[str] = Field(default_factory=list)
    types: list[str] = Field(default_factory=list)
    message: str = ""
    details: list[str] = Field(default_factory=list)  # ErrorInfo reasons, quota ids
    retry_delay: float | None = None  # google.rpc.RetryInfo
    raw: str = ""


class _Compiled:
    __slots__ = ("code", "detail", "message", "providers", "rule", "status", "type")

    def __init__(self, rule: ClassifierRule) -> None:
        flags = re.IGNORECASE
        self.rule = rule
        self.providers = {p.lower() for p in rule.providers} if rule.providers else None
        self.status = rule.status
        self.code = re.compile(rule.code, flags) if rule.code else None
        self.type = re.compile(rule.type, flags) if rule.type else None
        self.message = re.compile(rule.message, flags) if rule.message else None
        self.detail = re.compile(rule.detail, flags) if rule.detail else None

    def matches(self, facts: ErrorFacts, provider: str | None) -> bool:
        if self.providers is not None and (provider or "").lower() not in self.providers:
            return False
        if self.status is not None and not any(_status_match(s, facts.status) for s in self.status):
            return False
        if self.code is not None and not any(self.code.search(c) for c in facts.codes):
            return False
        if self.type is not None and not any(self.type.search(t) for t in facts.types):
            return False
        if self.message is not None and not self.message.search(facts.message or facts.raw):
            return False
        return not (self.detail is not None and not any(self.detail.search(d) for d in facts.details))


def _status_match(want: int | str | None, got: int | None) -> bool:
    if want is None or got is None:
        return want is None and got is None
    if isinstance(want, str):
        return str(got)[0] == want[0]
    return want == got


# ---------------------------------------------------------------------------
# Reading error envelopes
# ---------------------------------------------------------------------------


def _aws_type(value: str) -> str:
    # "ThrottlingException:http://internal.amazon.com/coral/..." or "com.amazon.coral#ExpiredTokenException"
    value = value.split(":", 1)[0] if ":http" in value or value.count(":") == 1 else value
    return value.rsplit("#", 1)[-1].strip()


def _duration(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9.]+)\s*(ms|s)?\s*", value)
        if m:
            n = float(m.group(1))
            return n / 1000 if m.group(2) == "ms" else n
    if isinstance(value, dict) and "seconds" in value:  # protobuf Duration as a dict
        return float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
    return None


def decode_body(body: Any) -> Any:
    """bytes/str (JSON, or an SSE `data:` line) -> parsed JSON if possible, else the text."""
    if isinstance(body, bytes | bytearray | memoryview):
        body = bytes(body).decode("utf-8", errors="replace")
    if isinstance(body, str):
        text = body.strip()
        if text.startswith("data:"):
            text = text[5:].strip()
        if text[:1] in ("{", "["):
            try:
                return orjson.loads(text)
            except orjson.JSONDecodeError:
                return body
        return body
    return body


def extract_facts(status: int | None, headers: Mapping[str, str] | None, body: Any,
                  _nested: bool = False) -> ErrorFacts:
    """What `body` says about an error, whatever its envelope: OpenAI-style `error` objects,
    flat vLLM/AWS bodies, `{"error": "..."}` strings (Ollama, TGI), a Responses-style
    `response.failed` event, a Gemini response whose prompt was blocked, an SSE `data:` line,
    and an error message that is itself another server's JSON error body (read once more)."""
    facts = ErrorFacts(status=status)
    data = decode_body(body)
    if isinstance(data, list) and data:  # Vertex sometimes wraps the error in a list
        data = data[0]
    if isinstance(data, str):
        facts.raw = data[:2000]
    elif data is not None:
        try:
            facts.raw = orjson.dumps(data).decode()[:2000]
        except TypeError:
            facts.raw = str(data)[:2000]

    def add_type(v: Any) -> None:
        if isinstance(v, str) and v:
            facts.types.append(_aws_type(v) if ("Exception" in v or "#" in v) else v)

    def add_code(v: Any) -> None:
        if v is not None and v != "":
            facts.codes.append(str(v))

    def read_error_obj(e: Mapping[str, Any]) -> None:
        if isinstance(e.get("message"), str):
            facts.message = e["message"]
        add_type(e.get("type"))
        add_type(e.get("status"))  # google.rpc.Status name, e.g. RESOURCE_EXHAUSTED
        add_type(e.get("__type"))
        add_code(e.get("code"))
        inner = e.get("innererror") or e.get("inner_error")
        if isinstance(inner, Mapping):
            add_code(inner.get("code"))
        for d in e.get("details") or ():
            if not isinstance(d, Mapping):
                continue
            if d.get("reason"):
                facts.details.append(str(d["reason"]))
            if "retryDelay" in d:
                facts.retry_delay = _duration(d["retryDelay"])
            for v in d.get("violations") or ():
                if isinstance(v, Mapping):
                    for k in ("quotaId", "quotaMetric", "subject"):
                        if v.get(k):
                            facts.details.append(str(v[k]))

    if isinstance(data, Mapping) and data.get("type") == "response.failed" \
            and isinstance(data.get("response"), Mapping):
        data = data["response"]  # Responses API: {"type": "response.failed", "response": {"error": {...}}}
    if isinstance(data, Mapping):
        err = data.get("error")
        fb = data.get("promptFeedback")
        if err is None and isinstance(fb, Mapping) and fb.get("blockReason") and not data.get("candidates"):
            # Gemini/Vertex: a 200 with no candidates, the prompt blocked (content filter, fatal)
            facts.message = f"The prompt was blocked by the safety filters (blockReason: {fb['blockReason']})"
            facts.details.append(f"PROMPT_BLOCKED_{fb['blockReason']}")
        elif isinstance(err, Mapping):  # OpenAI/vLLM-new/LM Studio/Azure/Anthropic/Google
            read_error_obj(err)
            add_type(data.get("type")) if data.get("type") not in (None, "error") else None
        elif isinstance(err, str):  # Ollama, TGI, vLLM auth: {"error": "..."}
            facts.message = err
            add_type(data.get("error_type"))
            add_code(data.get("code"))
        else:  # vLLM flat {"object": "error", ...}, AWS {"message"/"Message", "__type"}
            read_error_obj(data)
            if not facts.message:
                for k in ("Message", "detail", "errorMessage"):
                    if isinstance(data.get(k), str):
                        facts.message = data[k]
                        break
    elif isinstance(data, str):
        facts.message = data.strip()[:2000]
    if facts.message.lstrip().startswith("{") and not _nested:
        # a server that relays another's error body as its message (Ollama passes llama-server's
        # {"error": {"type": "exceed_context_size_error", ...}} on as a string): read that too
        inner = extract_facts(None, None, facts.message, _nested=True)
        facts.codes += inner.codes
        facts.types += inner.types
        facts.details += inner.details
        if inner.message:
            facts.message = inner.message

    if headers:
        aws = _header(headers, "x-amzn-errortype") or _header(headers, ":exception-type")
        if aws:
            t = _aws_type(aws)
            facts.types.insert(0, t[0].upper() + t[1:] if t else t)  # stream events are camelCase
    return facts


def _header(headers: Mapping[str, str], name: str) -> str | None:
    v = headers.get(name)
    if v is None:
        lname = name.lower()
        for k, val in headers.items():
            if k.lower() == lname:
                return val
    return v


_TRY_AGAIN = re.compile(r"(?:try again|retry) (?:in|after) ([0-9.]+)\s*(ms|milliseconds?|s|seconds?)\b", re.I)


def parse_retry_after(headers: Mapping[str, str] | None, facts: ErrorFacts | None = None,
                      *, now: float | None = None) -> float | None:
    """`retry-after-ms`, `retry-after` (seconds or HTTP date), google RetryInfo, or the message."""
    if headers:
        ms = _header(headers, "retry-after-ms")
        if ms:
            try:
                return max(0.0, float(ms) / 1000.0)
            except ValueError:
                pass
        ra = _header(headers, "retry-after")
        if ra:
            ra = ra.strip()
            try:
                return max(0.0, float(ra))
            except ValueError:
                try:
                    when = email.utils.parsedate_to_datetime(ra)
                except (TypeError, ValueError):
                    when = None
                if when is not None:
                    return max(0.0, when.timestamp() - (now if now is not None else time.time()))
    if facts is not None:
        if facts.retry_delay is not None:
            return facts.retry_delay
        m = _TRY_AGAIN.search(facts.message)
        if m:
            n = float(m.group(1))
            return n / 1000 if m.group(2).lower().startswith("m") else n
    return None


# ---------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------


def load_rules(source: str | Path | Iterable[Mapping[str, Any]]) -> list[ClassifierRule]:
    """Rules from a YAML/JSON file path, YAML text, or a list of dicts. Clear errors on bad input."""
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source and source.endswith((".yaml", ".yml", ".json"))):
        path = Path(source)
        if not path.exists():
            raise ValueError(f"classifier rules file not found: {path}")
        text = path.read_text(encoding="utf-8")
        origin = str(path)
    elif isinstance(source, str):
        text, origin = source, "<rules>"
    else:
        return _validate(list(source), "<rules>")
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{origin}: not valid YAML: {exc}") from exc
    if isinstance(data, Mapping) and "rules" in data:
        data = data["rules"]
    if not isinstance(data, list):
        raise ValueError(f"{origin}: expected a list of rules")
    return _validate(data, origin)


def _validate(items: list[Any], origin: str) -> list[ClassifierRule]:
    out = []
    for i, item in enumerate(items):
        if isinstance(item, ClassifierRule):
            out.append(item)
            continue
        try:
            out.append(ClassifierRule.model_validate(item))
        except Exception as exc:
            raise ValueError(f"{origin}: rule #{i + 1}: {exc}") from exc
    return out


@lru_cache(maxsize=1)
def builtin_rules() -> tuple[ClassifierRule, ...]:
    return tuple(load_rules(BUILTIN_RULES_FILE))


class Classifier:
    """Compiled rules: user rules first, then the built-in ones."""

    def __init__(self, extra_rules: Sequence[ClassifierRule] = ()) -> None:
        self.rules = [*extra_rules, *builtin_rules()]
        self._compiled = [_Compiled(r) for r in self.rules]

    def classify(self, status: int | None, headers: Mapping[str, str] | None, body: Any,
                 provider: str | None = None) -> Classification:
        facts = extract_facts(status, headers, body)
        retry_after = parse_retry_after(headers, facts)
        for c in self._compiled:
            if c.matches(facts, provider):
                r = c.rule
                return Classification(
                    error_class=r.error_class,
                    reason=r.reason,
                    retry_after=retry_after if retry_after is not None else r.retry_after,
                    rule=r.name,
                    message=(facts.message or facts.raw)[:500] or None,
                    retries=r.retries,
                )
        return Classification(error_class="failover", reason="unclassified", retry_after=retry_after,
                              message=(facts.message or facts.raw)[:500] or None)


@lru_cache(maxsize=1)
def _default_classifier() -> Classifier:
    return Classifier()


def classify_error(status: int | None, headers: Mapping[str, str] | None, body: Any,
                   provider: str | None = None, *,
                   rules: Sequence[ClassifierRule] | None = None) -> Classification:
    """Classify an upstream error. `rules` are tried before the built-in rules."""
    clf = Classifier(rules) if rules else _default_classifier()
    return clf.classify(status, headers, body, provider)


def transport_classification(reason: str, message: str | None = None) -> Classification:
    """A failure with no HTTP response (reset, refused, timeout, broken stream): next model."""
    return Classification(error_class="failover", reason=reason, message=message)
