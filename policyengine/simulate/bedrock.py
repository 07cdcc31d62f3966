"""A SIMULATED Amazon Bedrock runtime (Converse + ConverseStream) on 127.0.0.1.

It checks SigV4 signatures for real (recomputing them with botocore from the
access key pair it was given), answers with canned text in Bedrock's shapes,
streams AWS event-stream frames, and can be told to send Bedrock's errors
(ThrottlingException, ExpiredTokenException, ValidationException "Input is too
long", ModelNotReadyException, ...) as HTTP errors or as stream exceptions.
"""

from __future__ import annotations

import struct
import time
import zlib
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pydantic import BaseModel

from .server import DEFAULT_ANSWER, LocalSim, _words, take_fault

_STATUS = {"ThrottlingException": 429, "ModelNotReadyException": 429, "ServiceUnavailableException": 503,
           "ModelTimeoutException": 408, "ValidationException": 400, "ExpiredTokenException": 403,
           "AccessDeniedException": 403, "InternalServerException": 500, "UnrecognizedClientException": 403,
           "ResourceNotFoundException": 404, "ModelErrorException": 424}
_MESSAGES = {"ThrottlingException": "Too many requests, please wait before trying again.",
             "ModelNotReadyException": "Model is not ready to serve inference requests.",
             "ServiceUnavailableException": "Bedrock is unable to process your request.",
             "ModelTimeoutException": "Model has timed out in processing the request.",
             "ValidationException": "Input is too long for requested model.",
             "ExpiredTokenException": "The security token included in the request is expired",
             "AccessDeniedException": "You don't have access to the model with the specified model ID.",
             "InternalServerException": "The server encountered an internal error.",
             "UnrecognizedClientException": "The security token included in the request is invalid.",
             "ResourceNotFoundException": "Could not resolve the foundation model from the provided model identifier.",
             "ModelErrorException": "The model returned an error."}


def encode_event(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream frame (string headers only)."""
    hb = b"".join(len(k.encode()).to_bytes(1, "big") + k.encode() + b"\x07" + len(v.encode()).to_bytes(2, "big")
                  + v.encode() for k, v in headers.items())
    total = 12 + len(hb) + len(payload) + 4
    prelude = struct.pack(">II", total, len(hb))
    head = prelude + struct.pack(">I", zlib.crc32(prelude) & 0xFFFFFFFF) + hb + payload
    return head + struct.pack(">I", zlib.crc32(head) & 0xFFFFFFFF)


def _event(kind: str, body: dict) -> bytes:
    return encode_event({":event-type": kind, ":content-type": "application/json", ":message-type": "event"},
                        orjson.dumps(body))


class BedrockFault(BaseModel):
    exception: str  # e.g. "ThrottlingException"
    times: int | None = 1
    in_stream: bool = False  # send as an event-stream exception after the first text delta
    message: str | None = None


class SimBedrock(LocalSim):
    def __init__(self, *, access_key: str = "AKIDSIMULATED", secret_key: str = "simulated-secret",
                 region: str = "eu-west-2", api_keys: list[str] | None = None, answer: str = DEFAULT_ANSWER) -> None:
        self.creds = Credentials(access_key, secret_key)
        self.region = region
        self.api_keys = set(api_keys or ())
        self.answer = answer
        self.faults: list[BedrockFault] = []
        self.requests: list[dict[str, Any]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> SimBedrock:
        app = web.Application()
        app.router.add_post("/model/{model_id}/converse", self._converse)
        app.router.add_post("/model/{model_id}/converse-stream", self._converse_stream)
        await self._serve(app)
        return self

    def add_fault(self, exception: str, **kw: Any) -> None:
        self.faults.append(BedrockFault(exception=exception, **kw))

    # ------------------------------------------------------------------
    def _auth_ok(self, request: web.Request, raw: bytes) -> str | None:
        """None when the request is authentic, else the exception name."""
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            return None if auth[7:] in self.api_keys else "UnrecognizedClientException"
        if not auth.startswith("AWS4-HMAC-SHA256 "):
            return "UnrecognizedClientException"
        parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
        cred = parts.get("Credential", "").split("/")
        if len(cred) != 5 or cred[0] != self.creds.access_key or cred[2] != self.region or cred[3] != "bedrock":
            return "UnrecognizedClientException"
        signed = parts.get("SignedHeaders", "").split(";")
        headers = {h: request.headers[h] for h in signed if h != "host" and h in request.headers}
        req = AWSRequest(method="POST", url=f"http://{request.headers.get('host')}{request.raw_path}", data=raw,
                         headers=headers)
        req.context["timestamp"] = request.headers.get("x-amz-date", "")
        signer = SigV4Auth(self.creds, "bedrock", self.region)
        expected = signer.signature(signer.string_to_sign(req, signer.canonical_request(req)), req)
        if expected != parts.get("Signature"):
            return "InvalidSignatureException"
        return None

    def _take_fault(self, stream: bool) -> BedrockFault | None:
        return take_fault(self.faults, lambda f: f.in_stream and not stream)

    @staticmethod
    def _error(exc: str, message: str | None = None) -> web.Response:
        return web.Response(status=_STATUS.get(exc, 400), body=orjson.dumps({"message": message or _MESSAGES.get(exc, exc)}),
                            content_type="application/json",
                            headers={"x-amzn-ErrorType": f"{exc}:http://internal.amazon.com/coral/com.amazon.bedrock/"})

    async def _prologue(self, request: web.Request, stream: bool) -> tuple[dict, BedrockFault | None] | web.Response:
        raw = await request.read()
        rec = {"t": time.monotonic(), "model": unquote(request.match_info["model_id"]), "stream": stream,
               "auth": request.headers.get("authorization", "").split(" ")[0], "body": orjson.loads(raw or b"{}")}
        self.requests.append(rec)
        bad = self._auth_ok(request, raw)
        if bad:
            rec["status"] = 403
            return self._error(bad)
        fault = self._take_fault(stream)
        if fault is not None and not fault.in_stream:
            rec["status"] = _STATUS.get(fault.exception, 400)
            return self._error(fault.exception, fault.message)
        rec["status"] = 200
        return rec["body"], fault

    def _reply_text(self, body: dict) -> tuple[str, list[dict]]:
        msgs = body.get("messages") or []
        tool = ((body.get("toolConfig") or {}).get("tools") or [None])[0]
        if tool and msgs and not any("toolResult" in b for b in msgs[-1]["content"]):
            return "", [{"toolUseId": "tooluse_sim1", "name": tool["toolSpec"]["name"], "input": {"query": "sim"}}]
        text = self.answer
        if msgs and msgs[-1]["role"] == "assistant":  # prefill: continue the assistant's text
            prefix = "".join(b.get("text", "") for b in msgs[-1]["content"])
            text = text[len(prefix):] if text.startswith(prefix) else text
        return text, []

    async def _converse(self, request: web.Request) -> web.StreamResponse:
        pro = await self._prologue(request, False)
        if isinstance(pro, web.Response):
            return pro
        body, _ = pro
        text, calls = self._reply_text(body)
        content = [{"text": text}] if text else []
        content += [{"toolUse": c} for c in calls]
        n = len(_words(text)) + 5 * len(calls)
        return web.json_response({"output": {"message": {"role": "assistant", "content": content}},
                                  "stopReason": "tool_use" if calls else "end_turn",
                                  "usage": {"inputTokens": 11, "outputTokens": n, "totalTokens": 11 + n},
                                  "metrics": {"latencyMs": 5}})

    async def _converse_stream(self, request: web.Request) -> web.StreamResponse:
        pro = await self._prologue(request, True)
        if isinstance(pro, web.Response):
            return pro
        body, fault = pro
        text, calls = self._reply_text(body)
        resp = web.StreamResponse(status=200, headers={"content-type": "application/vnd.amazon.eventstream"})
        await resp.prepare(request)
        await resp.write(_event("messageStart", {"role": "assistant"}))
        words = _words(text)
        for i, w in enumerate(words):
            await resp.write(_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": w}}))
            if fault is not None and fault.in_stream and i == 0:
                exc = fault.exception[0].lower() + fault.exception[1:]
                await resp.write(encode_event({":exception-type": exc, ":content-type": "application/json",
                                               ":message-type": "exception"},
                                              orjson.dumps({"message": fault.message or _MESSAGES.get(fault.exception, "")})))
                await resp.write_eof()
                return resp
        for j, c in enumerate(calls, start=1):
            await resp.write(_event("contentBlockStart", {"contentBlockIndex": j, "start": {"toolUse": {
                "toolUseId": c["toolUseId"], "name": c["name"]}}}))
            await resp.write(_event("contentBlockDelta", {"contentBlockIndex": j, "delta": {"toolUse": {
                "input": orjson.dumps(c["input"]).decode()}}}))
            await resp.write(_event("contentBlockStop", {"contentBlockIndex": j}))
        await resp.write(_event("messageStop", {"stopReason": "tool_use" if calls else "end_turn"}))
        n = len(words)
        await resp.write(_event("metadata", {"usage": {"inputTokens": 11, "outputTokens": n, "totalTokens": 11 + n},
                                             "metrics": {"latencyMs": 5}}))
        await resp.write_eof()
        return resp
