"""`policyengine demo`: start everything, walk through the article, stop everything.

Starts (all on 127.0.0.1, ports picked by the kernel):
  * the SIMULATED model fleet (`fleet.py`), in this process;
  * a webhook inbox standing in for the reviewers' channel (`inbox.py`), in this process;
  * the real service, `policyengine serve`, as a child process on the embedded
    default (SQLite in a temporary directory, in-memory state) with the demo policy.
Then runs the steps (`steps.py`), prints what happened and where to look, and
stops everything it started, whatever happened. Exit status 0 only if every
step behaved as the policy says it must.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console

from . import report
from .fleet import DemoFleet
from .inbox import Inbox
from .procs import ServiceError, ServiceProcess, free_port, port_in_use
from .steps import STEPS, DemoContext, StepResult

POLICY_DIR = Path(__file__).resolve().parent / "policies"
STEP_TIMEOUT_S = 180.0  # a stuck step fails instead of hanging the demo
TENANT = "acme"


@dataclass
class DemoOptions:
    keep_db: Path | None = None  # keep the SQLite decision log at this path
    db_url: str | None = None  # or use this database (e.g. PostgreSQL); never deleted
    summary: Path | None = None  # write a JSON summary (steps, decision ids, db url)
    stay: bool = False  # after the walkthrough, keep everything running until Ctrl-C
    startup_timeout: float = 120.0


class DemoError(RuntimeError):
    pass


def _seed_keys(tokens: dict[str, str]) -> tuple[list[dict], dict[str, str]]:
    """API keys the service creates at start; tokens are passed by env var NAME, never inline."""
    spec = {
        # the routing step sends X-PolicyEngine-Channel: internal with this key (trusted_fields allows it)
        "app": dict(roles=["app"], subject="support-agent", attributes={"trusted_fields": ["channel"]}),
        "standard": dict(roles=["app"], subject="standard-tier-app", attributes={"tier": "standard"}),
        "enterprise": dict(roles=["app"], subject="enterprise-tier-app", attributes={"tier": "enterprise"}),
        "power": dict(roles=["app"], subject="power-user", attributes={"actor_role": "power"}),
        "reviewer": dict(roles=["reviewer"], subject="dana@acme.example", groups=["refunds", "legal",
                                                                                   "support-leads"]),
    }
    keys, env = [], {}
    for who, s in spec.items():
        var = f"DEMO_TOKEN_{who.upper()}"
        env[var] = tokens[who]
        keys.append({"token_env": var, "tenant": TENANT, **s})
    return keys, env


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


async def run_demo(opts: DemoOptions, console: Console | None = None) -> int:
    """Run the demo; SIGINT / SIGTERM stop it cleanly (everything started is stopped, exit 130)."""
    console = console or Console()
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, lambda: task.cancel() if task else None)
            installed.append(sig)
    try:
        return await _run(opts, console)
    except asyncio.CancelledError:
        console.print("[yellow]interrupted: everything the demo started has been stopped[/yellow]")
        return 130
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def _require_signal_stack() -> None:
    """The demo policy escalates on sentiment and verifies legal answers (divergence): with the
    light install (no `embeddings` extra) stop before starting anything, naming the extra."""
    from policyengine.signals.requirements import (
        EMBEDDING_SIGNALS,
        EmbeddingsNotInstalled,
        missing_modules,
        require_available,
    )

    if not missing_modules(EMBEDDING_SIGNALS):
        return
    from policyengine.dsl import load_policy_set

    try:
        require_available(load_policy_set([str(POLICY_DIR)]))
    except EmbeddingsNotInstalled as exc:
        raise DemoError(f"the demo cannot run: {exc}") from None


async def _run(opts: DemoOptions, console: Console) -> int:
    if opts.keep_db is not None and opts.db_url is not None:
        raise DemoError("use either --keep-db PATH or --db-url URL, not both")
    if opts.keep_db is not None and opts.keep_db.exists():
        raise DemoError(f"--keep-db {opts.keep_db} already exists; give a new path (the demo starts a fresh log)")
    _require_signal_stack()
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="policyengine-demo-"))
    db_path = opts.keep_db.resolve() if opts.keep_db else tmp / "decisions.db"
    db_url = opts.db_url or _sqlite_url(db_path)
    if opts.keep_db:
        db_path.parent.mkdir(parents=True, exist_ok=True)

    tokens = {who: "demo-" + secrets.token_urlsafe(18) for who in ("app", "standard", "enterprise", "power",
                                                                  "reviewer")}
    webhook_secret = secrets.token_urlsafe(24)
    fleet = DemoFleet.build()
    inbox = Inbox(port=free_port(), secret=webhook_secret)
    port = free_port()
    seed, token_env = _seed_keys(tokens)
    env = {
        **fleet.env(), **token_env,
        "POLICYENGINE_DATABASE_URL": db_url,
        "POLICYENGINE_POLICY_PATH": str(POLICY_DIR),
        "POLICYENGINE_SEED_KEYS": json.dumps(seed),
        "POLICYENGINE_MIGRATE_ON_START": "true",
        "POLICYENGINE_APPROVALS_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "POLICYENGINE_APPROVALS_LINK_SECRET": secrets.token_urlsafe(32),
        "POLICYENGINE_APPROVALS_WEBHOOK_SECRET": webhook_secret,
        "POLICYENGINE_APPROVALS_SWEEP_INTERVAL_S": "1",
        # the policy names the reviewers' webhook by env reference (`env:DEMO_REVIEWERS_WEBHOOK`)
        "DEMO_REVIEWERS_WEBHOOK": inbox.url,
        # ... which listens on loopback: webhooks go to public addresses only unless allowlisted
        "POLICYENGINE_WEBHOOK_HOSTS_ALLOW": "127.0.0.1",
    }
    # the embedded default: never inherit a deployment's POLICYENGINE_* settings
    service = ServiceProcess(port=port, env=env, log_path=tmp / "service.log", name="policyengine serve",
                             drop_prefixes=("POLICYENGINE_",))
    results: list[StepResult] = []
    started: list[str] = []
    cancelled = False
    ports = [port, inbox.port, *(s.port for s in fleet.servers.values())]
    try:
        report.banner(console, fleet, db_url, POLICY_DIR)
        await fleet.start()
        started.append("fleet")
        await inbox.start()
        started.append("inbox")
        with console.status("starting policyengine serve (loads the policy and the embedding model)..."):
            await service.start(timeout=opts.startup_timeout)
        started.append("service")
        report.started(console, service, time.monotonic() - t0)
        async with httpx.AsyncClient(timeout=httpx.Timeout(120.0, connect=5.0)) as client:
            ctx = DemoContext(base_url=service.url, tokens=tokens, fleet=fleet, inbox=inbox, client=client)
            for n, step in enumerate(STEPS, 1):
                t = time.monotonic()
                try:
                    async with asyncio.timeout(STEP_TIMEOUT_S):
                        res = await step(ctx)
                except Exception as exc:  # a broken or stuck step is reported, the others still run
                    res = StepResult(step.__name__.removeprefix("step_"), step.__name__, "")
                    res.error = f"{type(exc).__name__}: {exc}"
                results.append(res)
                report.step(console, n, res, time.monotonic() - t)
        if opts.stay:
            report.stay(console, service.url, tokens, fleet)
            try:
                await asyncio.Event().wait()  # until Ctrl-C / SIGTERM
            except asyncio.CancelledError:
                me = asyncio.current_task()
                if me is not None:
                    me.uncancel()  # this interrupt ends --stay; the results still decide the exit status
                console.print("stopping...")
    except ServiceError as exc:
        console.print(f"[red]the service did not start:[/red] {exc}")
        results.append(StepResult("startup", "start the service", "", error=str(exc)))
    except OSError as exc:  # e.g. a port taken between choosing it and binding it
        console.print(f"[red]could not start the demo's local servers:[/red] {exc}")
        results.append(StepResult("startup", "start the local servers", "", error=str(exc)))
    except asyncio.CancelledError:
        cancelled = True
        raise
    finally:
        with contextlib.suppress(Exception):
            rc = await service.stop()
            if "service" in started and rc not in (0, None, -15):
                console.print(f"[yellow]policyengine serve exited with status {rc}[/yellow]")
        await inbox.stop()
        await fleet.stop()
        leftovers = [p for p in ports if port_in_use(p)]
        if cancelled:
            shutil.rmtree(tmp, ignore_errors=True)
    ok = bool(results) and all(r.ok for r in results) and not leftovers
    if leftovers:
        console.print(f"[red]ports still in use after stopping: {leftovers}[/red]")
    if opts.summary is not None:
        opts.summary.parent.mkdir(parents=True, exist_ok=True)
        opts.summary.write_text(json.dumps({
            "ok": ok, "db_url": report.shown_url(db_url), "tenant": TENANT, "elapsed_s": round(time.monotonic() - t0, 2),
            "service_pid": service.pid, "ports": ports, "ports_left_open": leftovers,
            "steps": [r.as_dict() for r in results]}, indent=2))
    kept = opts.keep_db is not None or opts.db_url is not None
    report.summary(console, results, ok, db_url if kept else None, time.monotonic() - t0)
    if not ok:
        # keep the service log of a failed run; the rest of the temp dir goes
        with contextlib.suppress(OSError):
            where = (opts.summary.parent if opts.summary else opts.keep_db.parent if opts.keep_db
                     else Path(tempfile.gettempdir()))
            keep = where / f"policyengine-demo-{int(time.time())}.log"
            shutil.copy(service.log_path, keep)
            console.print(f"service log kept at {keep}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if ok else 1
