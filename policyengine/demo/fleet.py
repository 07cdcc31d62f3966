"""The demo's SIMULATED model fleet: OpenAI-compatible servers on 127.0.0.1.

Built on `policyengine.simulate.SimServer` (canned answers, the real error
bodies of vLLM / Ollama / OpenAI, faults scripted at run time). Every answer
says it is simulated. The policy in `policies/fleet.policy` names these models;
`DemoFleet.env()` gives the service the environment those names resolve from.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field

from policyengine.simulate.server import SimServer

from .procs import free_port


@dataclass(frozen=True)
class SimModel:
    name: str  # the policy's model name (also the upstream model id)
    flavour: str  # which server it imitates
    role: str  # what it stands for in the article
    env_url: str  # the env var the policy reads its base_url from
    key_envs: tuple[str, ...] = ()  # env vars of its API keys (rotated in order)
    context: int | None = None


MODELS: tuple[SimModel, ...] = (
    SimModel("qwen-72b", "vllm", "primary (g5.12xlarge)", "DEMO_QWEN_URL",
             ("DEMO_QWEN_KEY_1", "DEMO_QWEN_KEY_2"), 32768),
    SimModel("gemma-27b", "vllm", "summarisation, 1st fallback", "DEMO_GEMMA_URL", (), 8192),
    SimModel("gemma-9b", "ollama", "classification (low latency)", "DEMO_GEMMA9_URL", (), 8192),
    SimModel("kimi-large", "vllm", "long context / legal", "DEMO_KIMI_URL", (), 200000),
    SimModel("llama-managed", "openai", "managed fallback (Bedrock)", "DEMO_MANAGED_URL", (), 8192),
)


def _answer(m: SimModel) -> str:
    return (f"[SIMULATED {m.name}] This is a canned answer from a simulated {m.flavour} server standing in "
            f"for {m.role}. No model was run.")


@dataclass
class DemoFleet:
    servers: dict[str, SimServer] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)  # env var name -> secret (random per run)

    @classmethod
    def build(cls) -> DemoFleet:
        fleet = cls()
        for m in MODELS:
            for env in m.key_envs:
                fleet.keys[env] = "sim-" + secrets.token_urlsafe(12)
            fleet.servers[m.name] = SimServer(
                m.name, flavour=m.flavour, port=free_port(), context=m.context, answer=_answer(m),  # type: ignore[arg-type]
                keys=[fleet.keys[e] for e in m.key_envs] or None)
        return fleet

    def spec(self, name: str) -> SimModel:
        return next(m for m in MODELS if m.name == name)

    def __getitem__(self, name: str) -> SimServer:
        return self.servers[name]

    async def start(self) -> None:
        await asyncio.gather(*(s.start() for s in self.servers.values()))

    async def stop(self) -> None:
        await asyncio.gather(*(s.stop() for s in self.servers.values()), return_exceptions=True)

    def env(self) -> dict[str, str]:
        out = dict(self.keys)
        for m in MODELS:
            out[m.env_url] = self.servers[m.name].url
        return out

    def calls(self, name: str) -> int:
        """Chat requests the simulated server `name` has received so far."""
        return len(self.servers[name].seen())

    def set_answer(self, name: str, text: str) -> None:
        self.servers[name].answer = f"[SIMULATED {name}] {text}"

    def reset_answers(self) -> None:
        for m in MODELS:
            self.servers[m.name].answer = _answer(m)
