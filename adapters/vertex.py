"""Google Vertex AI and the Gemini API.

Two wire formats, chosen per model:

* **OpenAI-compatible endpoint** (`.../endpoints/openapi/chat/completions`): used
  when `base_url` contains `/endpoints/openapi` or ends with `/chat/completions`,
  or, without a base_url, when `model_id` names a publisher (`meta/llama-3.1-405b-instruct-maas`,
  `google/gemini-2.0-flash-001`). Requests pass through like any OpenAI server.
* **generateContent / streamGenerateContent** (`?alt=sse`): everything else
  (`model_id` like `gemini-2.0-flash-001`), translated to and from the OpenAI
  chat format. A `base_url` on `generativelanguage.googleapis.com` selects the
  Gemini API paths (`/models/{model}:generateContent`).

Credentials: a model with `keys` sends the key as `x-goog-api-key` (Gemini API
keys, Vertex express mode). Otherwise Google Application Default Credentials via
google-auth (service account file in GOOGLE_APPLICATION_CREDENTIALS, gcloud user
credentials, workload identity, the metadata server), refreshed off the event
loop before they expire.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from httpx_sse import EventSource

from policyengine.types import ModelSpec

from .base import CallOptions, TransportError, UpstreamError, guarded
from .openai_compat import OpenAIChunkStream, chat_url, prepare_body
from .streams import CredentialedAdapter, TranslatedChunkStream, open_response, post, stream_errors
from .translate import data_url_parts, finish_from_gemini, json_args, text_of

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


class VertexRequestError(ValueError):
    pass


# ---------------------------------------------------------------------------
# OpenAI <-> Gemini translation
# ---------------------------------------------------------------------------


def _parts(content: Any) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    out = []
    for p in content:
        if isinstance(p, str):
            out.append({"text": p})
        elif p.get("type") == "text":
            out.append({"text": p.get("text", "")})
        elif p.get("type") == "image_url":
            url = (p.get("image_url") or {}).get("url", "")
            mime, data = data_url_parts(url)
            if mime is not None:
                out.append({"inlineData": {"mimeType": mime, "data": data}})
            elif url.startswith("gs://"):
                out.append({"fileData": {"mimeType": "image/*", "fileUri": url}})
            else:
                raise VertexRequestError("generateContent accepts images as data: URLs or gs:// URIs")
        else:
            raise VertexRequestError(f"unsupported content part type {p.get('type')!r} for Gemini")
    return out


def to_gemini(body: dict) -> dict:
    contents: list[dict] = []
    system: list[dict] = []
    names: dict[str, str] = {}  # tool_call_id -> function name (functionResponse needs the name)

    def push(role: str, parts: list[dict]) -> None:
        if not parts:
            return
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})

    for m in body.get("messages") or ():
        role = m.get("role")
        if role in ("system", "developer"):
            system.append({"text": text_of(m.get("content"))})
        elif role == "user":
            push("user", _parts(m.get("content")))
        elif role == "assistant":
            parts = _parts(m.get("content"))
            for tc in m.get("tool_calls") or ():
                fn = tc.get("function") or {}
                names[tc.get("id", "")] = fn.get("name", "")
                parts.append({"functionCall": {"name": fn.get("name", ""), "args": json_args(fn.get("arguments"))}})
            push("model", parts)
        elif role == "tool":
            resp = json_args(m.get("content"))
            if not isinstance(resp, dict) or "_raw" in resp:
                resp = {"content": text_of(m.get("content"))}
            push("user", [{"functionResponse": {"name": names.get(m.get("tool_call_id", ""), m.get("name", "tool")),
                                                "response": resp}}])
        else:
            raise VertexRequestError(f"unsupported message role {role!r} for Gemini")
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    cfg: dict[str, Any] = {}
    mt = body.get("max_completion_tokens") or body.get("max_tokens")
    if mt:
        cfg["maxOutputTokens"] = int(mt)
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("n", "candidateCount"), ("seed", "seed"),
                     ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        if body.get(src) is not None:
            cfg[dst] = body[src]
    stop = body.get("stop")
    if stop:
        cfg["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    rf = body.get("response_format") or {}
    if rf.get("type") in ("json_object", "json_schema"):
        cfg["responseMimeType"] = "application/json"
        schema = (rf.get("json_schema") or {}).get("schema")
        if schema:
            cfg["responseSchema"] = schema
    if cfg:
        out["generationConfig"] = cfg
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools:
        decls = []
        for t in tools:
            fn = t.get("function") or {}
            d = {"name": fn.get("name", "")}
            if fn.get("description"):
                d["description"] = fn["description"]
            if fn.get("parameters"):
                d["parameters"] = fn["parameters"]
            decls.append(d)
        out["tools"] = [{"functionDeclarations": decls}]
        mode: dict[str, Any] | None = None
        if choice == "none":
            mode = {"mode": "NONE"}
        elif choice == "required":
            mode = {"mode": "ANY"}
        elif isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
            mode = {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
        elif choice == "auto":
            mode = {"mode": "AUTO"}
        if mode:
            out["toolConfig"] = {"functionCallingConfig": mode}
    return out


def _usage(u: Mapping[str, Any] | None) -> dict | None:
    if not u:
        return None
    p, c = int(u.get("promptTokenCount", 0)), int(u.get("candidatesTokenCount", 0))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": int(u.get("totalTokenCount", p + c))}


#: finishReasons that mean the safety system withheld the answer (generateContent's FinishReason enum)
_SAFETY_FINISH = frozenset({"SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"})


def _blocked(data: dict, *, started: bool = False) -> UpstreamError | None:
    """A safety block sent as HTTP 200: the prompt blocked (`promptFeedback.blockReason`, no
    candidates), or, before any text was sent, every candidate stopped by a safety finishReason
    with no content. An error the classifier calls fatal (content_filter): another model must
    not be asked the same thing."""
    fb = data.get("promptFeedback") or {}
    cands = data.get("candidates") or []
    if fb.get("blockReason") and not cands:
        msg = f"The prompt was blocked by Gemini safety filters (blockReason: {fb['blockReason']})"
        return UpstreamError(400, {}, {"error": {"code": 400, "message": msg, "status": "INVALID_ARGUMENT",
                                                 "details": [{"reason": f"PROMPT_BLOCKED_{fb['blockReason']}"}]}})
    if not started and cands and all(c.get("finishReason") in _SAFETY_FINISH
                                     and not (c.get("content") or {}).get("parts") for c in cands):
        why = cands[0]["finishReason"]
        msg = f"The answer was blocked by Gemini safety filters (finishReason: {why})"
        return UpstreamError(400, {}, {"error": {"code": 400, "message": msg, "status": "INVALID_ARGUMENT",
                                                 "details": [{"reason": f"RESPONSE_BLOCKED_{why}"}]}})
    return None


def _calls(parts: list[dict]) -> list[dict]:
    out = []
    for p in parts:
        if "functionCall" in p:
            fc = p["functionCall"]
            out.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                        "function": {"name": fc.get("name"), "arguments": orjson.dumps(fc.get("args", {})).decode()}})
    return out


def from_gemini(data: dict, model: str) -> dict:
    blocked = _blocked(data)
    if blocked is not None:
        raise blocked
    choices = []
    for i, cand in enumerate(data.get("candidates") or ()):
        parts = (cand.get("content") or {}).get("parts") or []
        text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
        calls = _calls(parts)
        msg: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            msg["tool_calls"] = calls
        choices.append({"index": cand.get("index", i), "message": msg,
                        "finish_reason": finish_from_gemini(cand.get("finishReason") or "STOP", bool(calls))})
    if not choices:
        raise TransportError("protocol_error", "generateContent returned no candidates")
    return {"id": f"chatcmpl-{data.get('responseId') or uuid.uuid4().hex}", "object": "chat.completion",
            "created": int(time.time()), "model": data.get("modelVersion") or model, "choices": choices,
            "usage": _usage(data.get("usageMetadata"))}


class GeminiChunkStream(TranslatedChunkStream):
    """streamGenerateContent?alt=sse -> OpenAI chunks. The stream has no [DONE]: it is
    complete when a candidate carries a finishReason."""

    async def _iter(self) -> AsyncIterator[dict]:
        first, usage, ntools = True, None, 0
        with stream_errors():
            async for sse in EventSource(self._response).aiter_sse():
                if not sse.data:
                    continue
                try:
                    data = orjson.loads(sse.data)
                except orjson.JSONDecodeError:
                    raise TransportError("malformed_chunk", f"not JSON: {sse.data[:80]!r}") from None
                if isinstance(data, list):
                    data = data[0] if data else {}
                if "error" in data:
                    err = data["error"]
                    raise UpstreamError(err.get("code") if isinstance(err, dict) else None, {}, data, in_stream=True)
                blocked = _blocked(data, started=not first)
                if blocked is not None:
                    raise blocked
                usage = _usage(data.get("usageMetadata")) or usage
                for cand in data.get("candidates") or ():
                    idx = cand.get("index", 0)
                    if first:
                        first = False
                        yield self._chunk({"role": "assistant", "content": ""}, index=idx)
                    parts = (cand.get("content") or {}).get("parts") or []
                    text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
                    if text:
                        yield self._chunk({"content": text}, index=idx)
                    calls = _calls(parts)
                    for c in calls:
                        yield self._chunk({"tool_calls": [{"index": ntools, **c}]}, index=idx)
                        ntools += 1
                    if cand.get("finishReason"):
                        self.saw_done = True
                        yield self._chunk({}, finish_from_gemini(cand["finishReason"], ntools > 0), index=idx)
            if usage and self._include_usage:
                yield self._usage_chunk(usage)


# ---------------------------------------------------------------------------
# Adapter
# ---------------------------------------------------------------------------


class VertexAdapter(CredentialedAdapter):
    """`credentials`: google.auth.credentials.Credentials; by default Application Default Credentials."""

    async def _token(self) -> str:
        async with self._lock:
            if self._credentials is None:
                import google.auth

                try:
                    creds, _ = await asyncio.to_thread(google.auth.default, scopes=list(SCOPES))
                except Exception as exc:  # DefaultCredentialsError and friends
                    raise TransportError("config", f"no Google credentials: {exc}") from None
                self._credentials = creds
            creds = self._credentials
            if not creds.valid or not getattr(creds, "token", None):
                import google.auth.transport.requests

                try:
                    await asyncio.to_thread(creds.refresh, google.auth.transport.requests.Request())
                except Exception as exc:  # RefreshError: expired/revoked credentials
                    raise UpstreamError(401, {}, {"error": {"code": 401, "status": "UNAUTHENTICATED",
                                                            "message": f"credential refresh failed: {exc}"}}) from None
            return creds.token

    async def _auth(self, opts: CallOptions) -> dict[str, str]:
        h = dict(opts.extra_headers)
        if opts.key:
            h["x-goog-api-key"] = opts.key
        else:
            h["authorization"] = f"Bearer {await self._token()}"
        return h

    @staticmethod
    def _region(spec: ModelSpec) -> str:
        return spec.region or "us-central1"

    def _project(self, spec: ModelSpec) -> str:
        p = spec.project
        if p is not None and not isinstance(p, str):
            p = (self._environ if self._environ is not None else __import__("os").environ).get(p.name)
        if not p:
            raise TransportError("config", f"model {spec.name}: Vertex AI needs `project`")
        return p

    def _mode(self, spec: ModelSpec, opts: CallOptions) -> str:
        base = opts.base_url or ""
        if "/endpoints/openapi" in base or base.rstrip("/").endswith("/chat/completions"):
            return "openai"
        if "generativelanguage" in base:
            return "gemini"
        if not base and "/" in spec.upstream_model:
            return "openai"
        return "vertex"

    def _host(self, spec: ModelSpec) -> str:
        r = self._region(spec)
        return "https://aiplatform.googleapis.com" if r == "global" else f"https://{r}-aiplatform.googleapis.com"

    def _openai_base(self, spec: ModelSpec, opts: CallOptions) -> str:
        if opts.base_url:
            return opts.base_url
        return (f"{self._host(spec)}/v1/projects/{self._project(spec)}/locations/{self._region(spec)}"
                "/endpoints/openapi")

    def _gen_url(self, spec: ModelSpec, opts: CallOptions, stream: bool) -> str:
        verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
        model = spec.upstream_model
        if self._mode(spec, opts) == "gemini":
            return f"{opts.base_url.rstrip('/')}/models/{model}:{verb}"
        base = (opts.base_url or f"{self._host(spec)}/v1").rstrip("/")
        return (f"{base}/projects/{self._project(spec)}/locations/{self._region(spec)}/publishers/google/models/"
                f"{model}:{verb}")

    def _payload(self, body: dict) -> bytes:
        try:
            return orjson.dumps(to_gemini(body))
        except VertexRequestError as exc:
            raise UpstreamError(400, {}, {"error": {"code": 400, "message": str(exc), "status": "INVALID_ARGUMENT"}}) from None

    @guarded
    async def complete(self, spec: ModelSpec, body: dict, opts: CallOptions) -> dict:
        headers = {"content-type": "application/json", **(await self._auth(opts))}
        if self._mode(spec, opts) == "openai":
            url, payload = chat_url(self._openai_base(spec, opts)), orjson.dumps(prepare_body(spec, body, opts, stream=False))
        else:
            url, payload = self._gen_url(spec, opts, False), self._payload(body)
        raw = await post(self._client, url, payload, headers, opts)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise TransportError("protocol_error", "response is not JSON") from None
        if self._mode(spec, opts) == "openai":
            return data
        return from_gemini(data, spec.upstream_model)

    @guarded
    async def open_stream(self, spec: ModelSpec, body: dict, opts: CallOptions):
        headers = {"content-type": "application/json", "accept": "text/event-stream", **(await self._auth(opts))}
        mode = self._mode(spec, opts)
        if mode == "openai":
            url, payload = chat_url(self._openai_base(spec, opts)), orjson.dumps(prepare_body(spec, body, opts, stream=True))
        else:
            url, payload = self._gen_url(spec, opts, True), self._payload(body)
        resp = await open_response(self._client, url, payload, headers, opts)
        if mode == "openai":
            return OpenAIChunkStream(resp)
        return GeminiChunkStream(resp, spec.upstream_model, opts.include_usage)
