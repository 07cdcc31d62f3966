"""A SIMULATED Vertex AI / Gemini endpoint on 127.0.0.1, with its own OAuth token endpoint.

Serves generateContent, streamGenerateContent (?alt=sse) and the OpenAI-compatible
`endpoints/openapi/chat/completions`, checks bearer tokens it issued from `/token`
(the token_uri of a service-account file) or `x-goog-api-key`, and can be told to
answer with google.rpc.Status errors (RESOURCE_EXHAUSTED, UNAVAILABLE,
INVALID_ARGUMENT + API_KEY_INVALID, FAILED_PRECONDITION...) or a safety block.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel

from .server import DEFAULT_ANSWER, LocalSim, _words, take_fault

_CODES = {"RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503, "INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400,
          "PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401, "INTERNAL": 500, "NOT_FOUND": 404,
          "DEADLINE_EXCEEDED": 504}


class VertexFault(BaseModel):
    status: str  # google.rpc code name, or "BLOCKED" for a promptFeedback safety block
    message: str = "simulated error"
    details: list[dict] = []
    times: int | None = 1


class SimVertex(LocalSim):
    def __init__(self, *, api_keys: list[str] | None = None, answer: str = DEFAULT_ANSWER) -> None:
        self.api_keys = set(api_keys or ())
        self.tokens: set[str] = set()
        self.answer = answer
        self.faults: list[VertexFault] = []
        self.requests: list[dict[str, Any]] = []
        self.token_requests = 0
        self.reject_token_requests = False  # e.g. a deleted service-account key
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def token_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    async def start(self) -> SimVertex:
        app = web.Application()
        app.router.add_post("/token", self._token)
        app.router.add_post("/v1/projects/{project}/locations/{location}/publishers/google/models/{rest}", self._gen)
        app.router.add_post("/v1beta/models/{rest}", self._gen)
        app.router.add_post("/v1/projects/{project}/locations/{location}/endpoints/openapi/chat/completions", self._openai)
        await self._serve(app)
        return self

    def add_fault(self, status: str, message: str = "simulated error", **kw: Any) -> None:
        self.faults.append(VertexFault(status=status, message=message, **kw))

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if (form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not form.get("assertion")
                or self.reject_token_requests):
            return web.json_response({"error": "invalid_grant", "error_description": "Invalid JWT"}, status=400)
        self.token_requests += 1
        tok = f"ya29.simulated-{uuid.uuid4().hex[:12]}"
        self.tokens.add(tok)
        return web.json_response({"access_token": tok, "expires_in": 3600, "token_type": "Bearer"})

    def _authorised(self, request: web.Request) -> bool:
        key = request.headers.get("x-goog-api-key")
        if key is not None:
            return key in self.api_keys
        auth = request.headers.get("authorization", "")
        return auth.startswith("Bearer ") and auth[7:] in self.tokens

    @staticmethod
    def _status(name: str, message: str, details: list[dict] | None = None) -> web.Response:
        code = _CODES.get(name, 400)
        err: dict[str, Any] = {"code": code, "message": message, "status": name}
        if details:
            err["details"] = details
        return web.Response(status=code, body=orjson.dumps({"error": err}), content_type="application/json")

    async def _prologue(self, request: web.Request, kind: str) -> tuple[dict, VertexFault | None] | web.Response:
        body = orjson.loads(await request.read() or b"{}")
        rec = {"t": time.monotonic(), "path": request.path, "kind": kind, "body": body,
               "auth": "api-key" if "x-goog-api-key" in request.headers else "bearer"}
        self.requests.append(rec)
        if not self._authorised(request):
            rec["status"] = 401
            if "x-goog-api-key" in request.headers:
                return self._status("INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", [
                    {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                     "domain": "googleapis.com", "metadata": {"service": "aiplatform.googleapis.com"}}])
            return self._status("UNAUTHENTICATED", "Request had invalid authentication credentials. Expected OAuth 2 "
                                "access token, login cookie or other valid authentication credential.")
        fault = take_fault(self.faults, lambda f: False)
        if fault is not None and fault.status != "BLOCKED":
            rec["status"] = _CODES.get(fault.status, 400)
            return self._status(fault.status, fault.message, fault.details)
        rec["status"] = 200
        return body, fault

    async def _gen(self, request: web.Request) -> web.StreamResponse:
        rest = request.match_info["rest"]
        model, _, verb = rest.partition(":")
        pro = await self._prologue(request, verb)
        if isinstance(pro, web.Response):
            return pro
        body, fault = pro
        if fault is not None and fault.status == "BLOCKED":
            return web.json_response({"promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [
                {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}]},
                "usageMetadata": {"promptTokenCount": 9, "totalTokenCount": 9}, "modelVersion": model})
        decls = [d for t in body.get("tools") or () for d in t.get("functionDeclarations", ())]
        last = (body.get("contents") or [{}])[-1]
        wants_call = decls and not any("functionResponse" in p for p in last.get("parts", ()))
        text = self.answer
        if last.get("role") == "model":  # prefill
            prefix = "".join(p.get("text", "") for p in last.get("parts", ()))
            text = text[len(prefix):] if text.startswith(prefix) else text
        usage = {"promptTokenCount": 9, "candidatesTokenCount": len(_words(text)),
                 "totalTokenCount": 9 + len(_words(text))}
        if verb == "generateContent":
            parts = [{"functionCall": {"name": decls[0]["name"], "args": {"query": "sim"}}}] if wants_call else [{"text": text}]
            return web.json_response({"candidates": [{"content": {"role": "model", "parts": parts},
                                                      "finishReason": "STOP", "index": 0}],
                                      "usageMetadata": usage, "modelVersion": model,
                                      "responseId": uuid.uuid4().hex[:16]})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        words = _words(text)
        for i in range(0, len(words), 3):
            chunk: dict[str, Any] = {"candidates": [{"content": {"role": "model", "parts": [{"text": "".join(words[i:i + 3])}]},
                                                     "index": 0}], "modelVersion": model}
            if i + 3 >= len(words):
                chunk["candidates"][0]["finishReason"] = "STOP"
                chunk["usageMetadata"] = usage
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\r\n\r\n")
        await resp.write_eof()
        return resp

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        pro = await self._prologue(request, "openai")
        if isinstance(pro, web.Response):
            return pro
        body, _ = pro
        return web.json_response({
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": body.get("model"), "choices": [{"index": 0, "message": {"role": "assistant", "content": self.answer},
                                                      "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 9, "completion_tokens": len(_words(self.answer)),
                      "total_tokens": 9 + len(_words(self.answer))}})
