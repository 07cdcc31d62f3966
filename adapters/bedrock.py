"""Amazon Bedrock: Converse and ConverseStream, translated to and from the OpenAI chat format.

Authentication: a Bedrock API key when the model declares `keys` (sent as a
bearer token), otherwise SigV4 with the standard AWS credential chain
(environment, shared config/credentials files, SSO, container and instance
roles) through botocore. The endpoint is `https://bedrock-runtime.<region>.amazonaws.com`
unless the model sets `base_url` (VPC endpoint, or a local simulator).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer, EventStreamError

from policyengine.types import ModelSpec

from .base import CallOptions, TransportError, UpstreamError, guarded
from .streams import CredentialedAdapter, TranslatedChunkStream, open_response, post, stream_errors
from .translate import (
    data_url_parts,
    finish_from_bedrock,
    json_args,
    text_of,
)

SERVICE = "bedrock"


class BedrockRequestError(ValueError):
    """The OpenAI request cannot be expressed as a Converse request."""


def _content_blocks(content: Any) -> list[dict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict] = []
    for part in content:
        if isinstance(part, str):
            blocks.append({"text": part})
        elif part.get("type") == "text":
            blocks.append({"text": part.get("text", "")})
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            mime, data = data_url_parts(url)
            if mime is None:
                raise BedrockRequestError("Bedrock Converse accepts images only as data: URLs (base64)")
            blocks.append({"image": {"format": mime.split("/")[-1].replace("jpg", "jpeg"), "source": {"bytes": data}}})
        else:
            raise BedrockRequestError(f"unsupported content part type {part.get('type')!r} for Bedrock")
    return blocks


def to_converse(body: dict) -> dict:
    """OpenAI chat request -> Bedrock Converse request body."""
    system: list[dict] = []
    messages: list[dict] = []

    def push(role: str, blocks: list[dict]) -> None:
        if not blocks:
            return
        if messages and messages[-1]["role"] == role:  # Converse wants alternating roles
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for m in body.get("messages") or ():
        role = m.get("role")
        if role in ("system", "developer"):
            system += [{"text": text_of(m.get("content"))}]
        elif role == "user":
            push("user", _content_blocks(m.get("content")))
        elif role == "assistant":
            blocks = _content_blocks(m.get("content"))
            for tc in m.get("tool_calls") or ():
                fn = tc.get("function") or {}
                blocks.append({"toolUse": {"toolUseId": tc.get("id") or f"tooluse_{uuid.uuid4().hex[:16]}",
                                           "name": fn.get("name", ""), "input": json_args(fn.get("arguments"))}})
            push("assistant", blocks)
        elif role == "tool":
            push("user", [{"toolResult": {"toolUseId": m.get("tool_call_id", ""),
                                          "content": [{"text": text_of(m.get("content"))}]}}])
        else:
            raise BedrockRequestError(f"unsupported message role {role!r} for Bedrock")
    out: dict[str, Any] = {"messages": messages}
    if system:
        out["system"] = system
    cfg: dict[str, Any] = {}
    mt = body.get("max_completion_tokens") or body.get("max_tokens")
    if mt:
        cfg["maxTokens"] = int(mt)
    if body.get("temperature") is not None:
        cfg["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        cfg["topP"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        cfg["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if cfg:
        out["inferenceConfig"] = cfg
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools and choice != "none":
        specs = []
        for t in tools:
            fn = t.get("function") or {}
            ts: dict[str, Any] = {"name": fn.get("name", ""),
                                  "inputSchema": {"json": fn.get("parameters") or {"type": "object", "properties": {}}}}
            if fn.get("description"):
                ts["description"] = fn["description"]
            specs.append({"toolSpec": ts})
        tc: dict[str, Any] = {"tools": specs}
        if choice == "required":
            tc["toolChoice"] = {"any": {}}
        elif isinstance(choice, dict) and choice.get("function", {}).get("name"):
            tc["toolChoice"] = {"tool": {"name": choice["function"]["name"]}}
        elif choice == "auto":
            tc["toolChoice"] = {"auto": {}}
        out["toolConfig"] = tc
    return out


def _usage(u: Mapping[str, Any] | None) -> dict | None:
    if not u:
        return None
    p, c = int(u.get("inputTokens", 0)), int(u.get("outputTokens", 0))
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": int(u.get("totalTokens", p + c))}


def from_converse(data: dict, model: str) -> dict:
    """Bedrock Converse response -> OpenAI chat.completion."""
    msg = ((data.get("output") or {}).get("message")) or {}
    texts, calls = [], []
    for block in msg.get("content") or ():
        if "text" in block:
            texts.append(block["text"])
        elif "toolUse" in block:
            tu = block["toolUse"]
            calls.append({"id": tu.get("toolUseId"), "type": "function",
                          "function": {"name": tu.get("name"), "arguments": orjson.dumps(tu.get("input", {})).decode()}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": message,
                                         "finish_reason": finish_from_bedrock(data.get("stopReason"))}],
            "usage": _usage(data.get("usage"))}


class BedrockChunkStream(TranslatedChunkStream):
    """ConverseStream (AWS event stream) -> OpenAI chunk dicts."""

    async def _iter(self) -> AsyncIterator[dict]:
        buf = EventStreamBuffer()
        tool_index: dict[int, int] = {}
        stopped = False
        with stream_errors():
            async for data in self._response.aiter_bytes():
                try:
                    buf.add_data(data)
                    messages = list(buf)
                except EventStreamError as exc:
                    raise TransportError("malformed_chunk", f"bad event-stream frame: {exc}") from None
                for m in messages:
                    h = m.headers
                    mtype = h.get(":message-type")
                    if mtype in ("exception", "error"):
                        etype = h.get(":exception-type") or h.get(":error-code") or "error"
                        raise UpstreamError(None, {":exception-type": etype}, m.payload, in_stream=True)
                    try:
                        ev = orjson.loads(m.payload) if m.payload else {}
                    except orjson.JSONDecodeError:
                        raise TransportError("malformed_chunk", "event payload is not JSON") from None
                    et = h.get(":event-type")
                    if et == "messageStart":
                        yield self._chunk({"role": "assistant", "content": ""})
                    elif et == "contentBlockStart":
                        tu = (ev.get("start") or {}).get("toolUse")
                        if tu:
                            idx = tool_index.setdefault(ev.get("contentBlockIndex", 0), len(tool_index))
                            yield self._chunk({"tool_calls": [{"index": idx, "id": tu.get("toolUseId"), "type": "function",
                                                               "function": {"name": tu.get("name"), "arguments": ""}}]})
                    elif et == "contentBlockDelta":
                        d = ev.get("delta") or {}
                        if "text" in d:
                            yield self._chunk({"content": d["text"]})
                        elif "toolUse" in d:
                            idx = tool_index.setdefault(ev.get("contentBlockIndex", 0), len(tool_index))
                            yield self._chunk({"tool_calls": [{"index": idx,
                                                               "function": {"arguments": d["toolUse"].get("input", "")}}]})
                    elif et == "messageStop":
                        stopped = True
                        yield self._chunk({}, finish_from_bedrock(ev.get("stopReason")))
                    elif et == "metadata":
                        usage = _usage(ev.get("usage"))
                        if usage and self._include_usage:
                            yield self._usage_chunk(usage)
                        self.saw_done = stopped
            if stopped:
                self.saw_done = True


class BedrockAdapter(CredentialedAdapter):
    """`credentials`: botocore Credentials; by default from `environ` or the AWS credential chain."""

    async def _creds(self) -> Credentials:
        if self._credentials is None:
            env = self._environ
            if env is not None and env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
                self._credentials = Credentials(env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"],
                                                env.get("AWS_SESSION_TOKEN"))
            else:
                async with self._lock:
                    if self._credentials is None:
                        import botocore.session

                        creds = await asyncio.to_thread(lambda: botocore.session.get_session().get_credentials())
                        if creds is None:
                            raise TransportError("config", "no AWS credentials found (environment, ~/.aws, SSO, "
                                                           "container or instance role)")
                        self._credentials = creds
        creds = self._credentials
        if hasattr(creds, "refresh_needed") and creds.refresh_needed():  # RefreshableCredentials
            return await asyncio.to_thread(creds.get_frozen_credentials)
        return creds.get_frozen_credentials() if hasattr(creds, "get_frozen_credentials") else creds

    def _endpoint(self, spec: ModelSpec, opts: CallOptions, stream: bool) -> str:
        region = spec.region or (self._environ or {}).get("AWS_REGION") or "us-east-1"
        base = (opts.base_url or f"https://bedrock-runtime.{region}.amazonaws.com").rstrip("/")
        # ":" stays literal: aiohttp (yarl) would decode %3A on the wire and break the signature.
        return f"{base}/model/{quote(spec.upstream_model, safe=':')}/{'converse-stream' if stream else 'converse'}"

    async def _headers(self, spec: ModelSpec, opts: CallOptions, url: str, payload: bytes, accept: str) -> dict:
        headers = {"content-type": "application/json", "accept": accept, **opts.extra_headers}
        if opts.key:  # Bedrock API key
            headers["authorization"] = f"Bearer {opts.key}"
            return headers
        region = spec.region or (self._environ or {}).get("AWS_REGION") or "us-east-1"
        req = AWSRequest(method="POST", url=url, data=payload, headers=headers)
        SigV4Auth(await self._creds(), SERVICE, region).add_auth(req)
        return dict(req.headers.items())

    def _prepare(self, body: dict) -> bytes:
        try:
            return orjson.dumps(to_converse(body))
        except BedrockRequestError as exc:
            raise UpstreamError(400, {"x-amzn-ErrorType": "ValidationException"}, {"message": str(exc)}) from None

    @guarded
    async def complete(self, spec: ModelSpec, body: dict, opts: CallOptions) -> dict:
        payload = self._prepare(body)
        url = self._endpoint(spec, opts, False)
        headers = await self._headers(spec, opts, url, payload, "application/json")
        raw = await post(self._client, url, payload, headers, opts)
        try:
            return from_converse(orjson.loads(raw), spec.upstream_model)
        except orjson.JSONDecodeError:
            raise TransportError("protocol_error", "Converse response is not JSON") from None

    @guarded
    async def open_stream(self, spec: ModelSpec, body: dict, opts: CallOptions) -> BedrockChunkStream:
        payload = self._prepare(body)
        url = self._endpoint(spec, opts, True)
        headers = await self._headers(spec, opts, url, payload, "application/vnd.amazon.eventstream")
        resp = await open_response(self._client, url, payload, headers, opts)
        return BedrockChunkStream(resp, spec.upstream_model, opts.include_usage)
