"""OpenTelemetry traces: a span per decision, per model attempt and per approval event.

Off unless configured, and then free: with no tracer installed, `span(...)` is one global read
and a shared no-op context manager, and `attempts(...)` returns at once; attributes are built
by callables that only run when tracing is on. Tracing is on when

* `setup(settings)` finds an OTLP endpoint (`settings.otel_endpoint`, else
  `$OTEL_EXPORTER_OTLP_ENDPOINT`) and opentelemetry-sdk with the OTLP/HTTP exporter is
  installed (`pip install 'policyengine-llm[otel]'`): spans are batched and exported over
  OTLP/HTTP to `<endpoint>/v1/traces` (an endpoint already ending in `/v1/traces` is used as
  it is), with `service.name = settings.otel_service_name`; or
* `use(provider)` installs a TracerProvider (tests: one with an in-memory exporter).

The spans (names and attributes follow the OpenTelemetry GenAI semantic conventions where
they apply):

* `policyengine.decide <action>` (server side of `/v1/evaluate`, of a chat and of an embeddings
  request):
  `policyengine.decision.id`, `policyengine.action`, `policyengine.tenant`, `policyengine.effect`,
  `policyengine.policy.hash`, `policyengine.outcome`; `error.type` when the request failed.
* `chat <upstream model>` (`embeddings <upstream model>` for an embeddings request; kind CLIENT),
  one per attempt of the failover chain, children of the
  decision's span, with the attempt's own start and duration: `gen_ai.operation.name`,
  `gen_ai.system` (the provider: `openai`, `vllm`, `ollama`, ..., `aws.bedrock`, `vertex_ai`), `gen_ai.request.model`, `policyengine.model`,
  `policyengine.deployment`, `policyengine.key_env` (a variable's name, never a key),
  `policyengine.attempt.outcome` (ok / failover / retry / fatal / skipped / cancelled),
  `error.type` (the classifier's reason: `timeout`, `server_error`, `cooldown:auth_invalid`...),
  `http.response.status_code`; the answering attempt also `gen_ai.response.model` and
  `gen_ai.usage.input_tokens` / `gen_ai.usage.output_tokens`.
* `policyengine.approval created` (a hold, inside the decision's span) and
  `policyengine.approval decided` (the reviewer's request, its own trace; or the timeout sweep's,
  `via=timer`), `policyengine.approval escalated` (the sweep): the approval id, the decision id,
  its state, groups, and for a decision how it was made (`via`).

Nothing secret goes on a span: no prompt or answer text, no key, no field values.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

log = logging.getLogger("policyengine.tracing")

__all__ = ["annotate", "attempts", "context_of", "enabled", "event", "setup", "shutdown", "span", "use"]

Attrs = Mapping[str, Any]
_tracer: Any = None  # an opentelemetry Tracer when tracing is on; None: off (every call is a no-op)
_provider: Any = None
_owned = False  # the provider was made by `setup` (so `shutdown` flushes and closes it)
_NOOP = contextlib.nullcontext(None)
# gen_ai.system values the semantic conventions name, by provider (the others are their own name)
GEN_AI_SYSTEMS = {"bedrock": "aws.bedrock", "vertex": "vertex_ai"}
NOT_ERRORS = frozenset({"PolicyDenied", "ModelNotAllowed", "ApprovalRequired", "ApprovalRefused"})


def enabled() -> bool:
    """Whether spans are being recorded."""
    return _tracer is not None


def use(provider: Any) -> None:
    """Record spans with `provider` (an opentelemetry-sdk TracerProvider); None switches tracing off.
    The global OpenTelemetry provider is left alone."""
    global _tracer, _provider, _owned
    _provider, _owned = provider, False
    _tracer = None if provider is None else provider.get_tracer("policyengine")


def _traces_url(endpoint: str) -> str:
    e = endpoint.rstrip("/")
    return e if e.endswith("/v1/traces") else f"{e}/v1/traces"


def setup(settings: Any) -> bool:
    """Switch tracing on for `settings` when an endpoint is configured (see the module docstring);
    True when on. A provider installed with `use` is kept when no endpoint is configured. Without
    opentelemetry-sdk a configured endpoint is reported (warning) and tracing stays off."""
    global _tracer, _provider, _owned
    endpoint = getattr(settings, "otel_endpoint", None) or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return enabled()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        log.warning("tracing: an OTLP endpoint is set but opentelemetry-sdk is not installed "
                    "(pip install 'policyengine-llm[otel]'): no traces")
        return False
    provider = TracerProvider(resource=Resource.create({"service.name": getattr(settings, "otel_service_name",
                                                                                   "policyengine")}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=_traces_url(endpoint))))
    _provider, _owned = provider, True
    _tracer = provider.get_tracer("policyengine")
    log.info("tracing: spans exported over OTLP/HTTP to %s", _traces_url(endpoint).split("?", 1)[0])
    return True


def shutdown() -> None:
    """Flush and close a provider `setup` made (at service stop); tracing is off afterwards."""
    global _tracer, _provider, _owned
    if _provider is not None and _owned:
        with contextlib.suppress(Exception):
            _provider.shutdown()
        _tracer, _provider, _owned = None, None, False


def _clean(attrs: Attrs) -> dict[str, Any]:
    """Attributes OpenTelemetry accepts: None dropped, other non-primitive values as strings."""
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, bool | int | float | str):
            out[k] = v
        elif isinstance(v, list | tuple) and all(isinstance(x, str) for x in v):
            out[k] = list(v)
        else:
            out[k] = str(v)
    return out


@contextlib.contextmanager
def _span(name: str, attrs: Callable[[], Attrs] | None, kind: str | None) -> Iterator[Any]:
    from opentelemetry.trace import SpanKind, Status, StatusCode

    with _tracer.start_as_current_span(name, kind=getattr(SpanKind, kind or "INTERNAL"),
                                       attributes=_clean(attrs()) if attrs else None,
                                       record_exception=False, set_status_on_exception=False) as sp:
        try:
            yield sp
        except BaseException as exc:
            kind_name = type(exc).__name__
            sp.set_attribute("error.type", getattr(exc, "code", None) or kind_name)
            if kind_name not in NOT_ERRORS and not isinstance(exc, GeneratorExit):
                sp.set_status(Status(StatusCode.ERROR, kind_name))
            raise


def span(name: str, attrs: Callable[[], Attrs] | None = None, *, kind: str | None = None) -> Any:
    """A context manager: a span named `name` (the current span's child) while the block runs,
    yielding it (or None when tracing is off). `attrs` is called once, only when on. An
    exception leaving the block sets `error.type` (and an error status unless it is a policy
    refusal such as `PolicyDenied`)."""
    if _tracer is None:
        return _NOOP
    return _span(name, attrs, kind)


def event(name: str, attrs: Callable[[], Attrs]) -> None:
    """A span for something that happened at one instant (a timeout the sweep applied), under the
    current span; nothing when tracing is off."""
    if _tracer is not None:
        _tracer.start_span(name, attributes=_clean(attrs())).end()


def annotate(sp: Any, attrs: Attrs) -> None:
    """Set `attrs` on `sp` (a span from `span`, or None: nothing)."""
    if sp is not None:
        sp.set_attributes(_clean(attrs))


def context_of(sp: Any) -> Any:
    """A context whose current span is `sp` (to parent spans made later, in another task); None when off."""
    if sp is None:
        return None
    from opentelemetry import trace

    return trace.set_span_in_context(sp)


def attempts(parent: Any, atts: Sequence[Mapping[str, Any]], specs: Mapping[str, Any], *,
             model: str | None = None, usage: Mapping[str, Any] | None = None,
             response_model: str | None = None, operation: str = "chat") -> None:
    """One CLIENT span per attempt of a dispatch (see the module docstring), children of `parent`
    (a context from `context_of`, or None: the current context), timed by the attempt's own
    `started_at` and `latency_ms`. `model` is the policy model that answered; `usage` and
    `response_model` go on its (last) successful attempt; `operation` is the GenAI operation
    (`chat`, `embeddings`): the spans' name and `gen_ai.operation.name`."""
    if _tracer is None or not atts:
        return
    from opentelemetry.trace import SpanKind, Status, StatusCode

    from policyengine.dispatch.explain import outcome

    answered = max((i for i, a in enumerate(atts) if outcome(a) == "ok" and a.get("model") == model), default=None)
    for i, a in enumerate(atts):
        spec = specs.get(a.get("model"))
        upstream = getattr(spec, "upstream_model", None) or a.get("model")
        provider = getattr(getattr(spec, "provider", None), "value", None)
        o = outcome(a)
        start = float(a.get("started_at") or time.time())
        end = start + float(a.get("latency_ms") or 0.0) / 1000
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": operation, "gen_ai.system": GEN_AI_SYSTEMS.get(provider or "", provider),
            "gen_ai.request.model": upstream,
            "policyengine.model": a.get("model"), "policyengine.deployment": a.get("deployment"),
            "policyengine.key_env": a.get("key_id"), "policyengine.attempt.outcome": o,
            "policyengine.attempt.index": i, "http.response.status_code": a.get("status"),
        }
        if o != "ok":
            attrs["error.type"] = a.get("reason") or o
        if i == answered:
            attrs["gen_ai.response.model"] = response_model or upstream
            if usage:
                attrs["gen_ai.usage.input_tokens"] = usage.get("prompt_tokens")
                attrs["gen_ai.usage.output_tokens"] = usage.get("completion_tokens")
        sp = _tracer.start_span(f"{operation} {upstream}", context=parent, kind=SpanKind.CLIENT,
                                attributes=_clean(attrs), start_time=int(start * 1e9))
        if o in ("failover", "retry", "fatal", "failed"):
            sp.set_status(Status(StatusCode.ERROR, str(attrs["error.type"])))
        sp.end(end_time=int(end * 1e9))
