"""The dispatcher against a real OpenAI-compatible server nobody here wrote: `transformers serve`
(from the installed transformers) with a tiny randomly initialised GPT-2-style model built at
test time in a tmp dir (a byte-level BPE tokenizer trained on one sentence, 2 layers, hidden 32,
64 positions). No download: HF_HUB_OFFLINE=1.

What it shows: plain and streamed answers (the server sends no `[DONE]`: the stream is
finalised after its finish_reason), a prompt longer than the model's 64 positions (a server with
a length check answers 400 "The prompt has N tokens, but the model takes at most 64"; an older
one has none: an IndexError, a bare 500 for a plain call, an in-band `{"error": "index out of
range in self"}` in a stream; every form fails over), and round-robin
balancing over two `transformers serve` processes as two deployments of one model, including
one of them going away mid-traffic.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from helpers.net import LOOPBACK, free_port

from policyengine.simulate.testing import USER
from policyengine.types import Deployment, ModelSpec, Provider, Routing

pytestmark = pytest.mark.slow

_NEEDED = ("transformers", "torch", "accelerate", "fastapi", "uvicorn", "tokenizers", "safetensors", "numpy")
_MISSING = [m for m in _NEEDED if importlib.util.find_spec(m) is None]
_CLI = Path(sys.executable).with_name("transformers")

def build_tiny_gpt2(out: Path, *, positions: int = 64, width: int = 32, layers: int = 2) -> None:
    """Write a randomly initialised GPT-2-style checkpoint `transformers` loads as it would any
    other: config.json, model.safetensors (numpy, seeded), a byte-level BPE tokenizer trained on
    one sentence, a chat template. No torch, no download."""
    import json

    import numpy as np
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out.mkdir(parents=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 4, trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(out / "tokenizer.json"))
    vocab = tok.get_vocab_size()
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "model_max_length": positions}))
    (out / "chat_template.jinja").write_text("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n"
                                             "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}")
    (out / "config.json").write_text(json.dumps({
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab, "n_positions": positions,
        "n_embd": width, "n_layer": layers, "n_head": 2, "bos_token_id": 0, "eos_token_id": 0,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True}))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 0, "eos_token_id": 0,
                                                            "max_new_tokens": 8}))
    rng = np.random.default_rng(0)

    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.02).astype(np.float32)

    e = width
    tensors = {"transformer.wte.weight": w(vocab, e), "transformer.wpe.weight": w(positions, e),
               "transformer.ln_f.weight": np.ones(e, np.float32), "transformer.ln_f.bias": np.zeros(e, np.float32)}
    for i in range(layers):  # Conv1D weights are (in, out)
        h = f"transformer.h.{i}."
        tensors |= {h + "ln_1.weight": np.ones(e, np.float32), h + "ln_1.bias": np.zeros(e, np.float32),
                    h + "ln_2.weight": np.ones(e, np.float32), h + "ln_2.bias": np.zeros(e, np.float32),
                    h + "attn.c_attn.weight": w(e, 3 * e), h + "attn.c_attn.bias": np.zeros(3 * e, np.float32),
                    h + "attn.c_proj.weight": w(e, e), h + "attn.c_proj.bias": np.zeros(e, np.float32),
                    h + "mlp.c_fc.weight": w(e, 4 * e), h + "mlp.c_fc.bias": np.zeros(4 * e, np.float32),
                    h + "mlp.c_proj.weight": w(4 * e, e), h + "mlp.c_proj.bias": np.zeros(e, np.float32)}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)  # the server is transformers' own code, nothing of ours
    return env


async def _wait_ready(proc: subprocess.Popen, url: str, deadline: float) -> None:
    async with httpx.AsyncClient(timeout=1.0) as c:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                if (await c.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    raise RuntimeError("transformers serve did not become healthy in time")


@pytest.fixture(scope="module")
def tiny_servers(tmp_path_factory):
    """(model path, [base URL, base URL]): two `transformers serve` processes pinned to one tiny model."""
    if _MISSING:
        pytest.skip(f"transformers serve needs {', '.join(_MISSING)} (not installed)")
    if not _CLI.exists():
        pytest.skip(f"no transformers CLI next to {sys.executable}")
    model = tmp_path_factory.mktemp("tiny-gpt2") / "model"
    build_tiny_gpt2(model)
    procs, urls = [], []
    try:
        for _ in range(2):
            port = free_port()
            procs.append(subprocess.Popen(
                [str(_CLI), "serve", str(model), "--host", LOOPBACK, "--port", str(port), "--device", "cpu",
                 "--log-level", "warning"], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
            urls.append(f"http://{LOOPBACK}:{port}")

        async def ready() -> None:
            deadline = time.monotonic() + 90
            await asyncio.gather(*(_wait_ready(p, u, deadline) for p, u in zip(procs, urls, strict=True)))

        asyncio.run(ready())
        yield str(model), urls, procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def _tiny(model: str, url: str, **kw) -> ModelSpec:
    return ModelSpec(name="tiny", provider=Provider.openai, model_id=model, base_url=f"{url}/v1", **kw)


ASK = {**USER, "max_tokens": 4}


async def test_plain_and_streamed_answers(tiny_servers, make_dispatcher):
    model, urls, _ = tiny_servers
    d = make_dispatcher([_tiny(model, urls[0])])
    r = await d.complete(ASK, Routing(chain=["tiny"]))
    assert r.model == "tiny" and r.finish_reason in ("length", "stop")
    assert r.usage["prompt_tokens"] > 0 and 0 < r.usage["completion_tokens"] <= 4
    assert r.response["model"] == model  # the server's own name for it
    s = d.stream({**ASK, "stream_options": {"include_usage": True}}, Routing(chain=["tiny"]))
    chunks = [c async for c in s]
    assert s.result.complete and s.result.finish_reason in ("length", "stop")  # no [DONE]: finalised anyway
    assert any(c.get("usage") for c in chunks) and s.result.usage["completion_tokens"] <= 4
    assert not any("error" in c for c in chunks)


async def test_prompt_longer_than_the_model_fails_over(tiny_servers, fleet, make_dispatcher):
    model, urls, _ = tiny_servers
    await fleet.add("spare", "vllm")
    d = make_dispatcher([_tiny(model, urls[0]), fleet.model_spec("spare")])
    long = {**ASK, "messages": [{"role": "user", "content": "the quick brown fox " * 40}]}
    chain = Routing(chain=["tiny", "spare"])
    r = await d.complete(long, chain)
    s = d.stream(long, chain)
    text = "".join([c["choices"][0]["delta"].get("content") or "" async for c in s if c.get("choices")])
    assert r.model == "spare" and text and s.result.model == "spare"
    got = [(a.model, a.status, a.error_class) for a in r.attempts]
    if r.attempts[0].status == 400:
        # a server with a prompt-length check (transformers >= 5.2x) answers 400 `{"detail": "The prompt
        # has 177 tokens, but the model takes at most 64, ..."}` before it streams: a context error
        assert got == [("tiny", 400, "failover"), ("spare", 200, None)]
        assert r.attempts[0].reason == "context_length_exceeded"
        assert [(a.model, a.status, a.reason) for a in s.result.attempts] == [
            ("tiny", 400, "context_length_exceeded"), ("spare", 200, None)]
        return
    # no length check: a bare 500 "Internal Server Error" (an IndexError), a generic 500 tried once
    # more, then the next model
    assert got == [("tiny", 500, "retry"), ("tiny", 500, "failover"), ("spare", 200, None)]
    # in a stream the same IndexError arrives in-band after the role chunk: read as a context error
    assert (s.result.attempts[0].model, s.result.attempts[0].reason) == ("tiny", "context_length_exceeded")


async def test_round_robin_over_two_servers_and_one_going_away(tiny_servers, make_dispatcher):
    model, urls, procs = tiny_servers
    spec = ModelSpec(name="tiny", provider=Provider.openai, model_id=model, balance="round_robin",
                     deployments=(Deployment(name="a", base_url=f"{urls[0]}/v1"),
                                  Deployment(name="b", base_url=f"{urls[1]}/v1")))
    d = make_dispatcher([spec])
    served = [(await d.complete(ASK, Routing(chain=["tiny"]))).attempts[-1].deployment for _ in range(6)]
    assert sorted(set(served)) == ["a", "b"] and served.count("a") == served.count("b") == 3
    procs[1].terminate()  # deployment b goes away (last test: the fixture is done with it)
    procs[1].wait(timeout=10)
    after = [await d.complete(ASK, Routing(chain=["tiny"])) for _ in range(4)]
    assert all(r.model == "tiny" and r.attempts[-1].deployment == "a" for r in after)  # no request lost
    assert any(a.deployment == "b" and a.reason == "connection_refused" for r in after for a in r.attempts)
