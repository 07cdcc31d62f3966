"""Shared fixtures: real PostgreSQL / Redis / Chromium when the machine has them.

Tests that need one of these skip with a clear reason when it is absent, never
silently: the reason names the service and the address tried.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# The suite's webhook, Teams and callback receivers listen on 127.0.0.1, which the service refuses
# by default (policyengine.netcheck); allow exactly that, and the example.com hosts some tests
# register as callbacks (never resolved: no DNS). tests/test_netcheck.py sets its own policies.
os.environ.setdefault("POLICYENGINE_WEBHOOK_HOSTS_ALLOW", "127.0.0.1")
os.environ.setdefault("POLICYENGINE_CALLBACK_HOSTS_ALLOW", "127.0.0.1,*.example.com")

PG_HOST, PG_PORT = "127.0.0.1", 5432
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A SQLAlchemy URL for the real PostgreSQL (database `test`), or skip with the reason."""
    if not _port_open(PG_HOST, PG_PORT):
        pytest.skip(f"PostgreSQL not reachable on {PG_HOST}:{PG_PORT} (scale-out tests need it)")
    return os.environ.get("PE_TEST_POSTGRES_URL", f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/test")


@pytest.fixture
def pg_schema_url(postgres_url: str):
    """A fresh PostgreSQL schema per test (isolated, dropped afterwards)."""
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in postgres_url else "?"
    yield f"{postgres_url}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _port_open(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"Redis not reachable on {REDIS_HOST}:{REDIS_PORT} (replica-shared state tests need it)")
    return os.environ.get("PE_TEST_REDIS_URL", f"redis://{REDIS_HOST}:{REDIS_PORT}/0")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium); browser tests need it")
    return path


# -- the simulated fleet and a dispatcher with short budgets (dispatch and adapter tests) --
# Fixtures live here, not in policyengine.simulate.testing: the shipped package never imports pytest.


@pytest.fixture
async def fleet():
    """A SimFleet on 127.0.0.1, started for the test and stopped after it."""
    from policyengine.simulate import SimFleet

    f = SimFleet()
    await f.start()
    yield f
    await f.stop()


@pytest.fixture
async def make_dispatcher():
    """`make(models, *, state=None, environ=None, **settings)`: a ChainDispatcher over `models`
    with `fast_settings(**settings)`; every one made is closed after the test."""
    from policyengine.dispatch import ChainDispatcher
    from policyengine.simulate.testing import fast_settings
    from policyengine.state import MemoryStateStore

    made: list[ChainDispatcher] = []

    def make(models, *, state=None, environ=None, **settings) -> ChainDispatcher:
        d = ChainDispatcher({m.name: m for m in models}, state or MemoryStateStore(), settings=fast_settings(**settings),
                            environ=environ or {})
        made.append(d)
        return d

    yield make
    for d in made:
        await d.aclose()
