"""A simulated fleet: several SimServers, one per model, started and stopped together."""

from __future__ import annotations

from typing import Any

from policyengine.types import EnvRef, ModelSpec, Provider

from .faults import Flavour
from .server import SimServer

_PROVIDER = {"vllm": Provider.vllm, "ollama": Provider.ollama, "tgi": Provider.tgi,
             "lmstudio": Provider.lmstudio, "openai": Provider.openai}


class SimFleet:
    """`async with SimFleet() as fleet: fleet.add("qwen-72b", "vllm"); ...` (add before or after start)."""

    def __init__(self) -> None:
        self.servers: dict[str, SimServer] = {}
        self._started = False

    async def add(self, model: str, flavour: Flavour = "vllm", **kw: Any) -> SimServer:
        if model in self.servers:
            raise ValueError(f"fleet already has a model named {model!r}")
        srv = SimServer(model, flavour=flavour, **kw)
        self.servers[model] = srv
        if self._started:
            await srv.start()
        return srv

    def __getitem__(self, model: str) -> SimServer:
        return self.servers[model]

    async def start(self) -> SimFleet:
        for s in self.servers.values():
            if s._runner is None:
                await s.start()
        self._started = True
        return self

    async def stop(self) -> None:
        for s in self.servers.values():
            await s.stop()
        self._started = False

    async def __aenter__(self) -> SimFleet:
        return await self.start()

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()

    def model_spec(self, model: str, *, key_envs: tuple[str, ...] = (), **kw: Any) -> ModelSpec:
        """A ModelSpec pointing at the simulated server (keys as env references)."""
        s = self.servers[model]
        return ModelSpec(name=model, provider=_PROVIDER[s.flavour], base_url=s.url, model_id=s.served_model,
                         keys=tuple(EnvRef(name=k) for k in key_envs), context=s.context, **kw)

    def describe(self) -> dict[str, Any]:
        return {"simulated": True, "models": {m: {"url": s.url, "flavour": s.flavour, "model_id": s.served_model,
                                                  "admin": f"{s.base}/_sim", "context": s.context}
                                              for m, s in self.servers.items()}}
