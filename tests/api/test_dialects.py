"""Every client speaks to the gateway: the real `anthropic` SDK on /v1/messages, the `openai` SDK's
Responses API and embeddings, against simulated upstreams, under the same policy as chat completions."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest
import pytest_asyncio

from policyengine.simulate.anthropic import SimAnthropic

TOOLS = [{"name": n, "description": f"{n} tool", "input_schema": {"type": "object"}}
         for n in ("lookup_order", "refund", "delete_account")]
PLAN = [("lookup_order", {"order_id": "A1"}), ("delete_account", {"user": "u-9"})]

POLICY = """
policy "dialects" version 1

model qwen-72b {
  provider openai
  base_url env("PE_T_QWEN_URL")
  keys [env("PE_T_QWEN_KEY_1"), env("PE_T_QWEN_KEY_2")]
  cost 0
  context 32768
}
model gemma-27b {
  provider openai
  base_url env("PE_T_GEMMA_URL")
  cost 0
}
model embed-a {
  provider openai
  base_url env("PE_T_KIMI_URL")
  model_id "kimi-large"
  serves [embeddings]
}
model embed-b {
  provider openai
  base_url env("PE_T_GEMMA_URL")
  model_id "gemma-27b"
  serves [embeddings]
}

model claude {
  provider anthropic
  base_url env("PE_T_CLAUDE_URL")
  keys [env("PE_T_CLAUDE_KEY")]
  model_id "claude-sim-1"
}

route default -> qwen-72b fallback [gemma-27b]
route when use_case == "native" -> claude fallback [qwen-72b]
route default -> embed-a fallback [embed-b]
allow model choice [qwen-72b, gemma-27b] when user.role == "power"

authorize lookup_order
deny delete_account
lexicon secrets ["launch codes"]
deny embeddings when text mentions secrets
"""

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def svc(tmp_path_factory):
    """One gateway for the module (chat on qwen/gemma, embeddings on the kimi and gemma simulators);
    each test starts from clean simulators (`fresh`)."""
    from api.conftest import running_service

    d = tmp_path_factory.mktemp("dialects")
    (d / "policies").mkdir()
    (d / "policies" / "dialects.policy").write_text(POLICY)
    claude = await SimAnthropic(keys=["ck1"], models=["claude-sim-1"]).start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PE_T_CLAUDE_URL", claude.url)
        mp.setenv("PE_T_CLAUDE_KEY", "ck1")
        async with running_service(f"sqlite:///{d / 'pe.db'}", mp, policy_dir=d / "policies") as s:
            s.sims["claude"] = claude  # type: ignore[assignment]
            yield s
    await claude.stop()


@pytest.fixture(autouse=True)
def fresh(svc):
    for name, sim in svc.sims.items():
        if name == "claude":
            sim.faults.clear()
            sim.requests.clear()
            continue
        sim.reset()
        sim.tool_plan = None
    yield


def _anthropic(svc, who: str = "app") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=svc.url, api_key=svc.tokens[who], max_retries=0, timeout=30)


async def _decision(svc, decision_id: str) -> dict:
    async with svc.client() as c:
        r = await c.get(f"/v1/decisions/{decision_id}")
    assert r.status_code == 200, r.text
    return r.json()


# ------------------------------------------------------------------------------ Anthropic Messages


async def test_anthropic_sdk_plain_message(svc):
    client = _anthropic(svc)
    raw = await client.messages.with_raw_response.create(
        model="auto", max_tokens=64, system="You are terse.", metadata={"user_id": "u-42"},
        messages=[{"role": "user", "content": [{"type": "text", "text": "Where is my order?"}]}])
    msg = await raw.parse()
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].type == "text" and msg.content[0].text.startswith("Simulated answer")
    assert msg.stop_reason in ("end_turn", "max_tokens") and msg.usage.output_tokens > 0
    assert msg.model == "qwen-72b"  # the policy's default route
    up = svc.sims["qwen-72b"].requests[-1].body
    assert up["messages"][0] == {"role": "system", "content": "You are terse."}
    assert up["max_tokens"] == 64 and up["user"] == "u-42"
    rec = await _decision(svc, raw.headers["x-policyengine-decision-id"])
    assert rec["kind"] == "chat" and rec["effect"] == "allow"
    await client.close()


async def test_anthropic_sdk_stream(svc):
    client = _anthropic(svc)
    kinds: list[str] = []
    text = ""
    async with client.messages.stream(model="auto", max_tokens=200,
                                      messages=[{"role": "user", "content": "hello"}]) as stream:
        async for ev in stream:
            kinds.append(ev.type)
            if ev.type == "content_block_delta" and ev.delta.type == "text_delta":
                text += ev.delta.text
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop", "message_delta"} <= set(kinds)
    assert text.startswith("Simulated answer") and final.content[0].text == text
    assert final.stop_reason == "end_turn"
    await client.close()


async def test_anthropic_sdk_tool_use_is_judged(svc):
    svc.sims["qwen-72b"].tool_plan = PLAN
    client = _anthropic(svc)
    msg = await client.messages.create(model="auto", max_tokens=100, tools=TOOLS,
                                       messages=[{"role": "user", "content": "Look up order A1"}])
    uses = [b for b in msg.content if b.type == "tool_use"]
    # the policy authorizes lookup_order and denies delete_account: only the allowed call is a tool_use block
    assert [(u.name, u.input) for u in uses] == [("lookup_order", {"order_id": "A1"})]
    assert msg.stop_reason == "tool_use"
    verdicts = {v["name"]: v["effect"] for v in msg.model_extra["policyengine"]["tool_calls"]}
    assert verdicts == {"lookup_order": "allow", "delete_account": "deny"}
    # the same, streamed: input_json_delta events carry the arguments
    async with client.messages.stream(model="auto", max_tokens=100, tools=TOOLS,
                                      messages=[{"role": "user", "content": "Look up order A1"}]) as stream:
        deltas = [ev.delta.type async for ev in stream if ev.type == "content_block_delta"]
        final = await stream.get_final_message()
    assert "input_json_delta" in deltas
    assert [(b.name, b.input) for b in final.content if b.type == "tool_use"] == [("lookup_order", {"order_id": "A1"})]
    assert final.stop_reason == "tool_use"
    # the tool result goes back as a tool_result block: an OpenAI `tool` message upstream
    svc.sims["qwen-72b"].tool_plan = None
    await client.messages.create(model="auto", max_tokens=50, messages=[
        {"role": "user", "content": "Look up order A1"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "lookup_order",
                                           "input": {"order_id": "A1"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "shipped"},
                                     {"type": "text", "text": "and now?"}]}])
    up = svc.sims["qwen-72b"].requests[-1].body["messages"]
    assert up[1]["tool_calls"][0]["function"] == {"name": "lookup_order", "arguments": '{"order_id":"A1"}'}
    assert up[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "shipped"}
    assert up[3] == {"role": "user", "content": "and now?"}
    await client.close()


async def test_anthropic_errors_are_the_sdks_usual_exceptions(svc):
    client = _anthropic(svc)
    with pytest.raises(anthropic.AuthenticationError) as ei:
        await _anthropic(svc).with_options(api_key="pe_wrong").messages.create(
            model="auto", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert ei.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        await client.messages.create(model="auto", max_tokens=0, messages=[{"role": "user", "content": "hi"}])
    assert bad.value.body["error"]["type"] == "invalid_request_error" and "max_tokens" in bad.value.message
    with pytest.raises(anthropic.PermissionDeniedError) as denied:  # a model not on the allowlist
        await client.messages.create(model="kimi-large", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert denied.value.body["error"]["type"] == "permission_error" and denied.value.body["error"]["decision_id"]
    svc.sims["qwen-72b"].add_fault("error", status=400, body={"object": "error", "message": "bad prompt",
                                                              "type": "BadRequestError", "code": 400})
    with pytest.raises(anthropic.BadRequestError) as up:  # the upstream's own 4xx, in Anthropic's shape
        await client.messages.create(model="auto", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert up.value.body["error"]["message"] == "bad prompt"
    # count_tokens: the gateway's estimate
    counted = await client.messages.count_tokens(model="auto", messages=[{"role": "user", "content": "x" * 400}])
    assert counted.input_tokens == 100
    # Bearer works as well as x-api-key (the SDK's auth_token)
    bearer = anthropic.AsyncAnthropic(base_url=svc.url, auth_token=svc.tokens["app"], max_retries=0)
    assert (await bearer.messages.create(model="auto", max_tokens=10,
                                         messages=[{"role": "user", "content": "hi"}])).content
    await bearer.close()
    await client.close()


NATIVE = {"X-PolicyEngine-Use-Case": "native"}


async def test_anthropic_upstream_gets_the_request_natively(svc):
    client = _anthropic(svc)
    system = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
    raw = await client.messages.with_raw_response.create(
        model="auto", max_tokens=40, system=system, extra_body={"top_k": 5}, extra_headers=NATIVE,
        messages=[{"role": "user", "content": [{"type": "text", "text": "hello", "cache_control": {"type": "ephemeral"}}]}])
    msg = await raw.parse()
    assert msg.content[0].text.startswith("Simulated answer") and raw.headers["x-policyengine-model"] == "claude"
    sent = svc.sims["claude"].requests[-1]
    assert sent["headers"]["x-api-key"] == "ck1" and sent["headers"]["anthropic-version"]
    body = sent["body"]
    # what the caller wrote, as it wrote it (cache_control, top_k), with the policy's model id
    assert body["system"] == system and body["top_k"] == 5 and body["model"] == "claude-sim-1"
    assert body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert "_pe_native" not in body
    async with client.messages.stream(model="auto", max_tokens=40, extra_headers=NATIVE,
                                      messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join([t async for t in stream.text_stream])
    assert text.startswith("Simulated answer")
    # the same model serves OpenAI clients: translated both ways, tool calls included
    chat = await svc.sdk().chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "look it up"}], extra_headers=NATIVE,
        tools=[{"type": "function", "function": {"name": "lookup_order", "parameters": {"type": "object"}}}])
    assert chat.choices[0].message.tool_calls[0].function.name == "lookup_order"
    assert chat.choices[0].finish_reason == "tool_calls"
    assert svc.sims["claude"].requests[-1]["body"]["tools"][0]["input_schema"] == {"type": "object"}
    # overloaded (529) fails over to the next model of the chain, which gets no Anthropic-only fields
    for _ in range(6):  # retried, then cooled down: every attempt on claude is refused
        svc.sims["claude"].add_fault(529, "overloaded_error")
    raw = await client.messages.with_raw_response.create(model="auto", max_tokens=20, extra_body={"top_k": 3},
                                                         extra_headers=NATIVE,
                                                         messages=[{"role": "user", "content": "hi"}])
    assert raw.headers["x-policyengine-model"] == "qwen-72b"
    assert raw.headers["x-policyengine-attempts"].startswith("claude#PE_T_CLAUDE_KEY:529:retry:overloaded")
    up = svc.sims["qwen-72b"].requests[-1].body
    assert "_pe_native" not in up and "top_k" not in up
    await client.close()


# ------------------------------------------------------------------------------ Responses API


async def test_openai_responses_plain_and_stream(svc):
    sdk = svc.sdk()
    resp = await sdk.responses.create(model="auto", instructions="Be brief.", input="Where is my order?",
                                      max_output_tokens=50)
    assert resp.status == "completed" and resp.output_text.startswith("Simulated answer")
    assert resp.model == "qwen-72b" and resp.usage.output_tokens > 0
    up = svc.sims["qwen-72b"].requests[-1].body
    assert up["messages"] == [{"role": "system", "content": "Be brief."},
                              {"role": "user", "content": "Where is my order?"}]
    stream = await sdk.responses.create(model="auto", input=[{"role": "user", "content": "hello"}], stream=True)
    types, text = [], ""
    async for ev in stream:
        types.append(ev.type)
        if ev.type == "response.output_text.delta":
            text += ev.delta
        if ev.type == "response.completed":
            done = ev.response
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert {"response.output_item.added", "response.output_item.done"} <= set(types)
    assert text.startswith("Simulated answer") and done.output_text == text


async def test_openai_responses_tools_and_statelessness(svc):
    svc.sims["qwen-72b"].tool_plan = [("lookup_order", {"order_id": "A1"})]
    sdk = svc.sdk()
    tools = [{"type": "function", "name": "lookup_order", "parameters": {"type": "object"}}]
    resp = await sdk.responses.create(model="auto", input="Look up A1", tools=tools)
    calls = [o for o in resp.output if o.type == "function_call"]
    assert [(c.name, c.arguments) for c in calls] == [("lookup_order", '{"order_id":"A1"}')]
    stream = await sdk.responses.create(model="auto", input="Look up A1", tools=tools, stream=True)
    types = [ev.type async for ev in stream]
    assert "response.function_call_arguments.delta" in types and "response.function_call_arguments.done" in types
    # a function_call_output goes back as an OpenAI tool message
    svc.sims["qwen-72b"].tool_plan = None
    await sdk.responses.create(model="auto", input=[
        {"role": "user", "content": "Look up A1"},
        {"type": "function_call", "call_id": "call_1", "name": "lookup_order", "arguments": '{"order_id":"A1"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "shipped"}])
    up = svc.sims["qwen-72b"].requests[-1].body["messages"]
    assert up[1]["tool_calls"][0]["id"] == "call_1" and up[2] == {"role": "tool", "tool_call_id": "call_1",
                                                                  "content": "shipped"}
    with pytest.raises(openai.BadRequestError) as ei:
        await sdk.responses.create(model="auto", input="again", previous_response_id="resp_123")
    assert "stateless" in ei.value.message
    with pytest.raises(openai.BadRequestError):
        await sdk.responses.create(model="auto", input="keep it", store=True)


# ------------------------------------------------------------------------------ legacy Completions


async def test_openai_legacy_completions_plain_stream_and_refusals(svc):
    sdk = svc.sdk()
    raw = await sdk.completions.with_raw_response.create(model="auto", prompt="Where is my order?", max_tokens=40)
    cmpl = raw.parse()
    assert cmpl.object == "text_completion" and cmpl.model == "qwen-72b"
    assert cmpl.choices[0].text.startswith("Simulated answer") and cmpl.usage.completion_tokens > 0
    assert cmpl.id == "cmpl-" + raw.headers["x-policyengine-decision-id"]
    up = svc.sims["qwen-72b"].requests[-1].body
    assert up["messages"] == [{"role": "user", "content": "Where is my order?"}] and up["max_tokens"] == 40
    rec = await _decision(svc, raw.headers["x-policyengine-decision-id"])
    assert rec["kind"] == "chat" and rec["effect"] == "allow"
    await sdk.completions.create(model="auto", prompt=["one prompt in a list"])
    assert svc.sims["qwen-72b"].requests[-1].body["max_tokens"] == 16  # the legacy API's default
    text = ""
    async for chunk in await sdk.completions.create(model="auto", prompt="hello", max_tokens=60, stream=True):
        assert chunk.object == "text_completion"
        text += chunk.choices[0].text if chunk.choices else ""
    assert text.startswith("Simulated answer")
    # the primary is down: the fallback answers, as on chat
    svc.sims["qwen-72b"].add_fault("error", status=503)
    assert (await sdk.completions.create(model="auto", prompt="hi")).model == "gemma-27b"
    for kwargs, param in (({"prompt": [1, 2, 3]}, "prompt"), ({"prompt": ["a", "b"]}, "prompt"),
                          ({"prompt": "x", "echo": True}, "echo"), ({"prompt": "x", "logprobs": 0}, "logprobs"),
                          ({"prompt": "x", "suffix": "end"}, "suffix"), ({"prompt": "x", "best_of": 3}, "best_of"),
                          ({"prompt": ""}, "prompt")):
        with pytest.raises(openai.BadRequestError) as ei:
            await sdk.completions.create(model="auto", **kwargs)
        assert ei.value.body["param"] == param, kwargs


# ------------------------------------------------------------------------------ embeddings


async def test_openai_embeddings_routed_with_failover_and_logged(svc):
    sdk = svc.sdk()
    raw = await sdk.embeddings.with_raw_response.create(model="auto", input=["hello", "world"])
    emb = raw.parse()
    assert [len(d.embedding) for d in emb.data] == [8, 8] and emb.model == "embed-a"
    assert svc.sims["kimi-large"].requests[-1].path == "/v1/embeddings"
    again = await sdk.embeddings.create(model="auto", input="hello", encoding_format="float")
    assert again.data[0].embedding == pytest.approx(emb.data[0].embedding, abs=1e-6)
    rec = await _decision(svc, raw.headers["x-policyengine-decision-id"])
    assert rec["kind"] == "embeddings" and rec["action"] == "embeddings"
    # the primary is down: the fallback answers
    svc.sims["kimi-large"].add_fault("error", status=503)
    raw = await sdk.embeddings.with_raw_response.create(model="auto", input="hello")
    assert raw.parse().model == "embed-b"
    assert raw.headers["x-policyengine-attempts"].startswith("embed-a:503")
    # standing orders apply: a denied input is a 403
    with pytest.raises(openai.PermissionDeniedError):
        await sdk.embeddings.create(model="auto", input="the launch codes are 1234")
    # a chat request never reaches an embeddings-only model
    chat = await sdk.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])
    assert chat.model == "qwen-72b"


async def test_dialect_routes_refuse_malformed_bodies(svc):
    async with httpx.AsyncClient(base_url=svc.url, headers={"x-api-key": svc.tokens["app"]}) as c:
        r = await c.post("/v1/messages", json={"max_tokens": 5, "messages": [{"role": "system", "content": "x"}]})
        assert r.status_code == 400 and r.json()["type"] == "error"
        r = await c.post("/v1/messages", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        r = await c.post("/v1/responses", json={"input": 5})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input"
        r = await c.post("/v1/embeddings", json={"input": []})
        assert r.status_code == 400 and r.json()["error"]["param"] == "input"
