"""The cost of a dialect at the edge (issue #20): translating a request and its answer, in process.

    .venv/bin/python benchmarks/dialects_bench.py [--repeat 7] [--number 2000]

Side by side in one run, per request (median of `--repeat` timings of `--number` calls):
  * request: Anthropic Messages -> OpenAI chat (`dialects.anthropic.to_chat`), Responses ->
    OpenAI chat (`dialects.responses.to_chat`), against the OpenAI route's own check
    (`routes.chat.validate_chat`), for a 6-turn conversation with 3 tools;
  * answer: chat.completion -> Anthropic message / Responses response, against orjson.dumps of
    the completion (what the OpenAI route sends);
  * stream: a 60-chunk answer written as Anthropic events / Responses events, against OpenAI's
    `data:` encoding of the same chunks.
The ratio column is the dialect's cost over the OpenAI path's in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import timeit

import orjson

from policyengine.api.dialects import anthropic as ant
from policyengine.api.dialects import responses as rsp
from policyengine.api.routes.chat import validate_chat
from policyengine.api.sse import OPENAI_EVENTS

TOOLS = [{"name": f"tool_{i}", "description": "a tool", "input_schema": {"type": "object", "properties": {
    "q": {"type": "string"}}}} for i in range(3)]
TURNS = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "words " * 40} for i in range(6)]
ANTHROPIC = {"model": "auto", "max_tokens": 512, "system": "Be brief.", "messages": TURNS, "tools": TOOLS}
RESPONSES = {"model": "auto", "instructions": "Be brief.", "input": TURNS,
             "tools": [{"type": "function", "name": t["name"], "parameters": t["input_schema"]} for t in TOOLS]}
CHAT = ant.to_chat(ANTHROPIC)
COMPLETION = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "qwen-72b",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "word " * 200},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 300, "completion_tokens": 200, "total_tokens": 500}}
CHUNKS = [{"id": "c", "object": "chat.completion.chunk", "model": "qwen-72b",
           "choices": [{"index": 0, "delta": {"content": "word "}, "finish_reason": None}]} for _ in range(59)]
CHUNKS.append({"id": "c", "object": "chat.completion.chunk", "model": "qwen-72b",
               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
DID = "12345678-1234-4234-8234-123456789abc"


def openai_stream() -> None:
    for c in CHUNKS:
        OPENAI_EVENTS.chunk(c)
    OPENAI_EVENTS.done()


def anthropic_stream() -> None:
    enc = ant.AnthropicEvents(decision_id=DID, model="qwen-72b")
    for c in CHUNKS:
        enc.chunk(c)
    enc.done()


def responses_stream() -> None:
    enc = rsp.ResponsesEvents(RESPONSES, decision_id=DID, model="qwen-72b")
    for c in CHUNKS:
        enc.chunk(c)
    enc.done()


CASES = [
    ("request", "OpenAI validate_chat", lambda: validate_chat(CHAT)),
    ("request", "Anthropic to_chat", lambda: ant.to_chat(ANTHROPIC)),
    ("request", "Responses to_chat", lambda: rsp.to_chat(RESPONSES)),
    ("answer", "OpenAI orjson.dumps", lambda: orjson.dumps(COMPLETION)),
    ("answer", "Anthropic to_message + dumps", lambda: orjson.dumps(ant.to_message(COMPLETION, decision_id=DID,
                                                                                    model="qwen-72b"))),
    ("answer", "Responses to_response + dumps", lambda: orjson.dumps(rsp.to_response(COMPLETION, RESPONSES,
                                                                                      decision_id=DID,
                                                                                      model="qwen-72b"))),
    ("stream", "OpenAI data: events", openai_stream),
    ("stream", "Anthropic events", anthropic_stream),
    ("stream", "Responses events", responses_stream),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--number", type=int, default=2000)
    a = ap.parse_args()
    base: dict[str, float] = {}
    print(f"{'part':8} {'case':34} {'us/request':>11} {'x OpenAI':>9}")
    for part, name, fn in CASES:
        us = statistics.median(timeit.repeat(fn, number=a.number, repeat=a.repeat)) / a.number * 1e6
        base.setdefault(part, us)
        print(f"{part:8} {name:34} {us:11.2f} {us / base[part]:9.2f}")


if __name__ == "__main__":
    main()
