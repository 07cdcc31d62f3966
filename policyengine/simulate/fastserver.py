"""A minimal, fast OpenAI-compatible upstream for benchmarks (SIMULATED, canned answer).

SimServer records every request and supports faults; this one does neither so
that the benchmark measures the client and the dispatcher, not the fake.

    python -m policyengine.simulate.fastserver --port 8101 [--latency-ms 20] [--status 500] [--processes 1]
        [--fail-rate 0.3] [--slow-rate 0.1 --slow-ms 800] [--seed 1]

`--fail-rate F`: that share of requests is answered 500 with vLLM's engine-crash body at once.
`--slow-rate R --slow-ms S`: that share waits S ms more; for a stream, after the headers and the
role chunk and before the first token (a slow first token), for a plain request before the answer.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time

import orjson
from aiohttp import web

ANSWER = orjson.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench", "system_fingerprint": "simulated",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Simulated answer for benchmarking."},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}})
_CHUNK = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench",
          "system_fingerprint": "simulated"}
STREAM = b"".join(
    [b"data: " + orjson.dumps({**_CHUNK, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                                      "finish_reason": None}]}) + b"\n\n"]
    + [b"data: " + orjson.dumps({**_CHUNK, "choices": [{"index": 0, "delta": {"content": f"word{i} "},
                                                        "finish_reason": None}]}) + b"\n\n" for i in range(20)]
    + [b"data: " + orjson.dumps({**_CHUNK, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n",
       b"data: " + orjson.dumps({**_CHUNK, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 20,
                                                                    "total_tokens": 32}}) + b"\n\n",
       b"data: [DONE]\n\n"])
ERROR = orjson.dumps({"error": {"message": "EngineCore encountered an issue.", "type": "InternalServerError",
                                "param": None, "code": 500}})


_ROLE_END = STREAM.index(b"\n\n") + 2  # the role chunk, sent before a slow first token


def make_app(latency: float = 0.0, status: int = 200, *, fail_rate: float = 0.0, slow_rate: float = 0.0,
             slow: float = 0.0, seed: int | None = None) -> web.Application:
    rng = random.Random(seed)

    async def chat(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        if latency:
            await asyncio.sleep(latency)
        if status != 200 or (fail_rate and rng.random() < fail_rate):
            return web.Response(status=status if status != 200 else 500, body=ERROR, content_type="application/json")
        delay = slow if slow_rate and rng.random() < slow_rate else 0.0
        if b'"stream":true' in raw:
            if not delay:
                return web.Response(body=STREAM, content_type="text/event-stream")
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(STREAM[:_ROLE_END])
            await asyncio.sleep(delay)
            await resp.write(STREAM[_ROLE_END:])
            await resp.write_eof()
            return resp
        if delay:
            await asyncio.sleep(delay)
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--status", type=int, default=200)
    p.add_argument("--fail-rate", type=float, default=0.0)
    p.add_argument("--slow-rate", type=float, default=0.0)
    p.add_argument("--slow-ms", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=None)
    a = p.parse_args(argv)
    print(f"SIMULATED fast upstream on http://{a.host}:{a.port}/v1 (started {time.time():.0f})", file=sys.stderr, flush=True)
    web.run_app(make_app(a.latency_ms / 1000, a.status, fail_rate=a.fail_rate, slow_rate=a.slow_rate,
                         slow=a.slow_ms / 1000, seed=a.seed), host=a.host, port=a.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
