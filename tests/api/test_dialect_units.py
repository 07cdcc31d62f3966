"""The dialect translations on their own (pure functions, no server): what is refused, and how a
broken stream ends in each dialect."""

from __future__ import annotations

import orjson
import pytest
from policyengine.adapters.anthropic import from_message, to_messages
from policyengine.adapters.base import NATIVE_KEY

from policyengine.api.dialects import DialectError
from policyengine.api.dialects import anthropic as ant
from policyengine.api.dialects import embeddings as emb
from policyengine.api.dialects import responses as rsp
from policyengine.types import ModelSpec, Provider

DID = "12345678-1234-4234-8234-123456789abc"
ERR = {"error": {"message": "stream failed (stream_cut)", "type": "upstream_error", "code": "stream_cut",
                 "decision_id": DID}}


def _events(raw: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in raw.decode().strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], orjson.loads(lines["data"])))
    return out


def test_anthropic_stream_that_breaks_ends_on_an_error_event():
    enc = ant.AnthropicEvents(decision_id=DID, model="m")
    first = _events(enc.chunk({"choices": [{"index": 0, "delta": {"content": "Hel"}}]}))
    assert [e for e, _ in first] == ["message_start", "ping", "content_block_start", "content_block_delta"]
    (kind, body), = _events(enc.chunk(ERR))
    assert kind == "error" and body["error"]["type"] == "api_error" and body["error"]["decision_id"] == DID


def test_responses_stream_that_breaks_ends_on_response_failed():
    enc = rsp.ResponsesEvents({"input": "x"}, decision_id=DID, model="m")
    enc.chunk({"choices": [{"index": 0, "delta": {"content": "Hel"}}]})
    events = _events(enc.chunk(ERR))
    assert events[-1][0] == "response.failed"
    assert events[-1][1]["response"]["status"] == "failed" and events[-1][1]["response"]["error"]["code"] == "stream_cut"


@pytest.mark.parametrize("body, param", [
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
      "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0].type"),
    ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
     "messages[0].content[0].type"),
])
def test_anthropic_requests_the_gateway_cannot_translate(body, param):
    with pytest.raises(DialectError) as ei:
        ant.to_chat(body)
    assert ei.value.param == param


@pytest.mark.parametrize("body, param", [
    ({"input": "x", "previous_response_id": "resp_1"}, "previous_response_id"),
    ({"input": "x", "store": True}, "store"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
])
def test_responses_requests_that_need_state_or_hosted_tools(body, param):
    with pytest.raises(DialectError) as ei:
        rsp.to_chat(body)
    assert ei.value.param == param


def test_anthropic_adapter_translates_openai_requests_and_answers():
    spec = ModelSpec(name="claude", provider=Provider.anthropic, base_url="http://x", model_id="claude-x")
    body = {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}]},
                         {"role": "tool", "tool_call_id": "t1", "content": "r"}, {"role": "user", "content": "more"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": "required", "stop": "END", NATIVE_KEY: {"anthropic": {"top_k": 3}}}
    out = to_messages(spec, body, stream=False)
    assert out["system"] == "S" and out["model"] == "claude-x" and out["max_tokens"] == 4096
    assert out["tool_choice"] == {"type": "any"} and out["stop_sequences"] == ["END"] and out["top_k"] == 3
    # a tool result and the next user text merge into one user turn (Anthropic's turns alternate)
    assert out["messages"][2] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t1", "content": "r"}, {"type": "text", "text": "more"}]}
    assert out["messages"][1]["content"][0] == {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}
    resp = from_message({"id": "msg_1", "content": [{"type": "tool_use", "id": "t2", "name": "f", "input": {}}],
                         "stop_reason": "tool_use", "usage": {"input_tokens": 3, "output_tokens": 4}}, "claude-x")
    assert resp["choices"][0]["finish_reason"] == "tool_calls" and resp["usage"]["total_tokens"] == 7


def test_embeddings_base64_matches_floats():
    resp = {"data": [{"index": 0, "embedding": [0.5, -0.25]}]}
    b64 = emb.encode(resp, "base64")["data"][0]["embedding"]
    import base64
    import struct
    assert list(struct.unpack("<2f", base64.b64decode(b64))) == [0.5, -0.25]
    assert emb.upstream_body({"input": "x", NATIVE_KEY: {}, "encoding_format": "base64"}) == {
        "input": "x", "encoding_format": "float"}
