"""The simulated fleet is a faithful OpenAI-compatible server: the real `openai` SDK talks to it,
its admin API works over HTTP, and it runs as a subprocess (`python -m policyengine.simulate`)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import openai
import pytest

from policyengine.simulate import DEFAULT_ANSWER, Fault, SimServer


async def test_openai_sdk_against_simulator():
    async with SimServer("qwen-72b", flavour="vllm", keys=["sk-sim"], context=4096) as sim:
        client = openai.AsyncOpenAI(base_url=sim.url, api_key="sk-sim", max_retries=0)
        r = await client.chat.completions.create(model="qwen-72b", messages=[{"role": "user", "content": "hi"}])
        assert r.choices[0].message.content == DEFAULT_ANSWER and r.system_fingerprint == "simulated"
        stream = await client.chat.completions.create(model="qwen-72b", messages=[{"role": "user", "content": "hi"}],
                                                      stream=True, stream_options={"include_usage": True})
        parts, usage = [], None
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
            usage = chunk.usage or usage
        # the simulator counts one completion token per word of its answer
        assert "".join(parts) == DEFAULT_ANSWER and usage.completion_tokens == len(DEFAULT_ANSWER.split(" "))
        sim.add_fault(Fault(kind="rate_limit", retry_after=3))
        with pytest.raises(openai.RateLimitError) as ei:
            await client.chat.completions.create(model="qwen-72b", messages=[{"role": "user", "content": "hi"}])
        assert ei.value.response.headers["retry-after"] == "3"
        with pytest.raises(openai.BadRequestError, match="maximum context length is 4096"):
            await client.chat.completions.create(model="qwen-72b", messages=[{"role": "user", "content": "x" * 20000}])
        bad = openai.AsyncOpenAI(base_url=sim.url, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await bad.chat.completions.create(model="qwen-72b", messages=[{"role": "user", "content": "hi"}])
        assert [r.key for r in sim.seen()] == ["sk-sim"] * 4 + ["sk-wrong"]
        await client.close()
        await bad.close()


@pytest.mark.slow
def test_simulator_subprocess_and_admin_api():
    proc = subprocess.Popen([sys.executable, "-m", "policyengine.simulate", "--model", "qwen-72b=vllm",
                             "--model", "gemma-27b=ollama"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        assert info["simulated"] is True and set(info["models"]) == {"qwen-72b", "gemma-27b"}
        q = info["models"]["qwen-72b"]
        with httpx.Client(timeout=10) as c:
            assert c.post(q["admin"] + "/faults", json={"kind": "unavailable", "times": 1}).status_code == 200
            assert c.post(q["admin"] + "/faults", json={"kind": "no-such-fault"}).status_code == 422
            body = {"model": "qwen-72b", "messages": [{"role": "user", "content": "hi"}]}
            assert c.post(q["url"] + "/chat/completions", json=body).status_code == 503
            assert c.post(q["url"] + "/chat/completions", json=body).status_code == 200
            seen = c.get(q["admin"] + "/requests").json()
            assert [r["status"] for r in seen] == [503, 200] and seen[0]["fault"] == "unavailable"
    finally:
        proc.terminate()
        proc.wait(10)
    assert "SIMULATED" in proc.stderr.read()
