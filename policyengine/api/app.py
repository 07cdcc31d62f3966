"""`create_app(settings)`: the FastAPI service.

Every module in `policyengine/api/routes/` that has a `router` attribute is
included automatically (the approvals package adds its routes that way).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import logging
import os
import pkgutil
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from policyengine import tracing
from policyengine.api import routes as routes_pkg
from policyengine.api.errors import install_error_handlers
from policyengine.api.http import PolicyEngineApp
from policyengine.gateway import Runtime, build_runtime, secrets
from policyengine.settings import Settings, auth_disabled_problem
from policyengine.store import ApiKeyRepo, upgrade

log = logging.getLogger("policyengine.api")


def discover_routes() -> tuple[list[Any], dict[str, Any]]:
    """Every route module's `router`, and the `HOT_ROUTES` (path -> handler) they declare."""
    routers, hot = [], {}
    for m in sorted(pkgutil.iter_modules(routes_pkg.__path__), key=lambda m: m.name):
        if m.name.startswith("_"):
            continue
        mod = importlib.import_module(f"{routes_pkg.__name__}.{m.name}")
        router = getattr(mod, "router", None)
        if router is not None:
            routers.append(router)
        hot.update(getattr(mod, "HOT_ROUTES", {}))
    return routers, hot


async def _seed_keys(settings: Settings, keys: ApiKeyRepo) -> None:
    for k in settings.seed_keys:
        token = os.environ.get(k.token_env)
        if not token:
            raise RuntimeError(f"seed_keys: environment variable {k.token_env} is not set")
        await keys.create(tenant=k.tenant, roles=set(k.roles), subject=k.subject, groups=set(k.groups),
                          attributes=k.attributes, token=token, description=f"seeded from ${k.token_env}")


def create_app(settings: Settings | None = None) -> PolicyEngineApp:
    """The service for `settings` (from the environment when omitted).

    Its lifespan starts, in order: migrations (when `migrate_on_start`), the decision log, the
    seeded keys, the policy set (a policy that does not load stops the start), the embedding
    warm-up, the scheduler, the route lifespans (approvals), SIGHUP reload, the key-revocation
    watcher; and stops them in reverse.
    """
    settings = settings or Settings()
    problem = auth_disabled_problem(settings)
    if problem:
        raise RuntimeError(f"cannot start: {problem}")
    rt = build_runtime(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tracing_before = tracing.enabled()  # a provider installed before (tests) is not ours to close
        if settings.migrate_on_start:
            await asyncio.to_thread(upgrade, settings.database_url)
        await rt.log.start()
        tracing_here = tracing.setup(settings) and not tracing_before  # spans over OTLP when configured
        await _seed_keys(settings, rt.keys)
        secrets.load_at_start(rt)  # keys and base URLs from the secrets file, before the policy reads them
        if settings.auth_disabled:
            log.warning("AUTH IS DISABLED (auth_disabled=true): no API key is checked; every request is tenant "
                        "%r with every role. Development on loopback only.", settings.dev_tenant)
        if not settings.auth_disabled and not await rt.keys.list():
            log.warning("no API keys exist: every request will get 401. Create one with "
                        "`policyengine keys create --tenant T --role admin --role app` or set seed_keys")
        res = await rt.policies.reload(by="startup")
        rt.metrics.policy_reloads.labels("ok" if res.ok else "refused").inc()
        if not res.ok:
            raise RuntimeError(f"cannot start: the policy set at {', '.join(settings.policy_path)} does not "
                               f"load: {res.error}\n" + "\n".join(d.get("message", "") for d in res.diagnostics))
        secrets.remember(rt)
        _warm_signals(rt)
        rt.scheduler.start()
        loop = asyncio.get_running_loop()
        sighup = False
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError, AttributeError):
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(on_sighup(rt)))
            sighup = True
        app.state.started_at = time.time()
        watcher = None  # started last, so a failed start leaves no task behind
        if settings.key_cache_ttl_s > 0 and settings.key_revocation_poll_s > 0:
            watcher = asyncio.create_task(rt.key_cache.watch_revocations(
                settings.key_revocation_poll_s), name="key-revocations")
        secrets_watch = None
        if settings.secrets_file and settings.secrets_poll_s > 0:
            secrets_watch = asyncio.create_task(secrets.watch_secrets(rt, settings.secrets_poll_s),
                                                name="secrets-file")
        gc_before = _tune_gc(settings.gc_gen0_threshold)
        try:
            yield
        finally:
            if gc_before is not None:  # several apps can live in one process (tests): leave it as found
                gc.unfreeze()
                gc.set_threshold(*gc_before)
            if sighup:
                with contextlib.suppress(Exception):
                    loop.remove_signal_handler(signal.SIGHUP)
            if secrets_watch is not None:
                secrets_watch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await secrets_watch
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher
            with contextlib.suppress(Exception):
                rt.scheduler.shutdown(wait=False)
            await rt.policies.aclose()
            if rt.limiter is not None:  # the settlements it still holds are applied first
                with contextlib.suppress(Exception):
                    await rt.limiter.store.aclose()
            await rt.log.aclose()
            if tracing_here:
                tracing.shutdown()
            close = getattr(rt.state, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
            await rt.db.aclose()

    app = PolicyEngineApp(title="policyengine", version="0.1.0", lifespan=lifespan,
                          description="Control layer for fleets of language models.")
    app.state.runtime = rt
    # while the loop serves next to nothing else (policyengine.api.http.QUIET_IN_FLIGHT): smaller
    # checkpoint passes, and under an fsync per commit a lone row's commit on the loop (unless the
    # settings say never)
    rt.log.quiet = app.quiet
    rt.log.fsync_on_loop = settings.sqlite_fsync_on_loop
    install_error_handlers(app)
    routers, hot = discover_routes()
    for router in routers:
        app.include_router(router)
    for path, handler in hot.items():
        app.add_hot_route(path, handler)
    return app


async def on_sighup(rt: Runtime) -> None:
    """SIGHUP: re-read the secrets file (a changed key clears the cooldowns its old value earned),
    then reload the policy set."""
    try:
        await secrets.reload_secrets(rt)
    except Exception:  # a broken secrets file must not stop the policy reload
        log.exception("SIGHUP: reloading the secrets file failed")
    await reload_policies(rt, "SIGHUP")


async def reload_policies(rt: Runtime, by: str) -> Any:
    """Reload the policy set (refused, and the old one kept, when it does not load); counted."""
    res = await rt.policies.reload(by=by)
    rt.metrics.policy_reloads.labels(("ok" if res.changed else "unchanged") if res.ok else "refused").inc()
    if res.ok and res.changed:
        _warm_signals(rt)  # a new set may need more loaded: /readyz waits for it
    return res


def _tune_gc(gen0_threshold: int) -> tuple[int, int, int] | None:
    """Once started: move everything loaded so far (policies, models, libraries) out of the
    collector's way (`gc.freeze`), and collect the young generation less often. Each request
    allocates a few hundred short-lived containers; at CPython's default threshold (700) a
    collection runs every request or two and walks every young object still alive. Measured in
    process (benchmarks/inprocess_bench.py --only gc): 20 % less CPU per plain chat, 14 % per
    evaluate, no measurable change per stream. Returns the
    thresholds to restore at shutdown (None: nothing was changed)."""
    if gen0_threshold <= 0:
        return None
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0_threshold, before[1], before[2])
    return before


def _warm_signals(rt: Runtime) -> None:
    """Load what the serving policy needs (embedding model, classifiers) in the background;
    `/readyz` is not ready until it is loaded (policyengine.gateway.readiness)."""
    from policyengine.gateway.readiness import start_warmup

    start_warmup(rt)
