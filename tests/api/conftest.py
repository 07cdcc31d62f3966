"""A real service on loopback: uvicorn + create_app, simulated upstreams (policyengine.simulate), SQLite or
PostgreSQL, and API keys seeded from the environment."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn
from helpers.net import free_port

from policyengine.settings import SeedKey, Settings
from policyengine.simulate.server import SimServer

POLICIES = Path(__file__).parent / "policies"

TOKENS = {
    "app": "pe_test_app_token_0123456789abcdef",
    "power": "pe_test_power_token_0123456789abcdef",
    "admin": "pe_test_admin_token_0123456789abcdef",
    "other": "pe_test_other_tenant_token_0123456789",
    "reviewer": "pe_test_reviewer_token_0123456789abcd",
}


@dataclass
class Service:
    url: str
    app: object
    settings: Settings
    sims: dict[str, SimServer]
    tokens: dict[str, str]
    _sdks: list = field(default_factory=list)

    def client(self, who: str = "app", **kw) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {TOKENS[who]}"},
                                 timeout=30, **kw)

    def sdk(self, who: str = "app"):
        """A real openai.AsyncOpenAI client for this service (closed when the service stops)."""
        import openai

        # 180 s: a request that meets a classifier still being trained waits for it (about a
        # minute on a loaded machine, once per process)
        c = openai.AsyncOpenAI(base_url=self.url + "/v1", api_key=self.tokens[who], max_retries=0, timeout=180)
        self._sdks.append(c)
        return c

    async def close_sdks(self) -> None:
        for c in self._sdks:
            await c.close()

    @property
    def runtime(self):
        return self.app.state.runtime


def seed_env(monkeypatch) -> list[SeedKey]:
    for who, tok in TOKENS.items():
        monkeypatch.setenv(f"PE_T_TOKEN_{who.upper()}", tok)
    return [
        SeedKey(token_env="PE_T_TOKEN_APP", tenant="acme", roles=["app"], subject="support-app"),
        SeedKey(token_env="PE_T_TOKEN_POWER", tenant="acme", roles=["app"], subject="power-app",
                attributes={"actor_role": "power"}),
        SeedKey(token_env="PE_T_TOKEN_ADMIN", tenant="acme", roles=["admin"], subject="ops@acme"),
        SeedKey(token_env="PE_T_TOKEN_OTHER", tenant="globex", roles=["app"], subject="globex-app"),
        SeedKey(token_env="PE_T_TOKEN_REVIEWER", tenant="acme", roles=["reviewer"], subject="rita@acme",
                groups=["refunds"]),
    ]


@contextlib.asynccontextmanager
async def running_service(db_url: str, monkeypatch, policy_dir: Path = POLICIES, *, wait_ready: bool = True,
                          **overrides):
    from policyengine.api import create_app

    sims = {"qwen-72b": SimServer("qwen-72b", flavour="vllm", keys=["qk1", "qk2"], context=32768),
            "gemma-27b": SimServer("gemma-27b", flavour="ollama"),
            "kimi-large": SimServer("kimi-large", flavour="vllm")}
    for s in sims.values():
        await s.start()
    monkeypatch.setenv("POLICYENGINE_APPROVALS_LINK_SECRET", "test-link-secret-0123456789abcdef")
    monkeypatch.setenv("POLICYENGINE_APPROVALS_CALLBACK_SECRET", "test-callback-secret-0123456789")
    monkeypatch.setenv("PE_T_QWEN_URL", sims["qwen-72b"].url)
    monkeypatch.setenv("PE_T_QWEN_KEY_1", "qk1")
    monkeypatch.setenv("PE_T_QWEN_KEY_2", "qk2")
    monkeypatch.setenv("PE_T_GEMMA_URL", sims["gemma-27b"].url)
    monkeypatch.setenv("PE_T_KIMI_URL", sims["kimi-large"].url)
    settings = Settings(database_url=db_url, policy_path=[str(policy_dir)], seed_keys=seed_env(monkeypatch),
                        **{"key_cache_ttl_s": 0, **overrides})
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.025)
    else:
        raise RuntimeError("service did not start")
    # as behind a load balancer that gates on /readyz: the models and classifiers the policy needs
    # are loaded before the first request (the first load in a process trains both classifiers,
    # over a minute on a loaded machine; later services share them)
    warmup = app.state.runtime.signals_warmup
    if warmup is not None and wait_ready:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(warmup), 600)
    try:
        svc = Service(url=f"http://127.0.0.1:{port}", app=app, settings=settings, sims=sims, tokens=TOKENS)
        yield svc
        await svc.close_sdks()
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)
        for s in sims.values():
            await s.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'pe.db'}"
    return request.getfixturevalue("pg_schema_url")


@pytest.fixture
async def service(db_url, monkeypatch):
    async with running_service(db_url, monkeypatch) as svc:
        yield svc


@pytest.fixture
def tokens() -> dict[str, str]:
    return TOKENS


@pytest.fixture
def service_factory(monkeypatch):
    """running_service(db_url, policy_dir=...) as an async context manager."""

    def make(db_url: str, policy_dir: Path = POLICIES, **kw):
        return running_service(db_url, monkeypatch, policy_dir=policy_dir, **kw)

    return make


@pytest.fixture
def policies_dir() -> Path:
    return POLICIES
