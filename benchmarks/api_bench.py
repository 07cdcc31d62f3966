"""Service benchmark: evaluate throughput/latency with durable logging, and the gateway's added latency.

    .venv/bin/python benchmarks/api_bench.py [--duration 10] [--db sqlite|postgres|both] [--skip-chat]

Layout (per the issue): the service is pinned to CPU 0; the load generator (Debian's `wrk`) and the
fake upstream are pinned to CPU 1, so the figures are per core. Everything runs in the same invocation,
so the ratios (gateway vs direct upstream) are measured side by side on the same machine state.

Measured:
  * POST /v1/evaluate at concurrency 1 and 32, SQLite (WAL, synchronous=FULL) and PostgreSQL; every
    response is sent only after its decision row is committed (group commit). The row count is checked
    against the number of 2xx responses.
  * POST /v1/chat/completions against a fake upstream: wrk straight at the upstream vs through the
    gateway, at concurrency 1 (added p50/p99 latency) and 32 (throughput), non-streaming and streaming.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOKEN = "pe_bench_token_0123456789abcdefghijkl"
PG_URL = os.environ.get("PE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

POLICY = textwrap.dedent('''
    policy "bench" version 1

    model qwen-72b  { provider vllm base_url env("PE_BENCH_UPSTREAM") cost 0 context 32768 }
    model gemma-27b { provider ollama base_url env("PE_BENCH_UPSTREAM") cost 0 }

    route default -> qwen-72b fallback [gemma-27b]
    route when use_case == "summarisation" -> gemma-27b fallback [qwen-72b]

    authorize chat, classify_ticket, draft_response, route_department
    require approval for refund when amount > 100 GBP {
      reviewers group "refunds"  remind every 1h  timeout 8h -> deny
    }
    deny delete_account

    lexicon litigation ["lawsuit", "sue", "solicitor", "attorney", "legal action", "court"]
    escalate when text mentions litigation
''')


# ----------------------------------------------------------------------------- fake upstream

def run_upstream(port: int) -> None:
    """A small, fast OpenAI-compatible upstream (SIMULATED canned answer), plain and streaming."""
    import orjson
    from aiohttp import web

    answer = {"id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Simulated answer."},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}
    plain = orjson.dumps(answer)

    def chunk(delta, finish=None, usage=None):
        c = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": "bench",
             "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        if usage:
            c["choices"], c["usage"] = [], usage
        return b"data: " + orjson.dumps(c) + b"\n\n"

    stream_body = (chunk({"role": "assistant", "content": ""}) + chunk({"content": "Simulated"})
                   + chunk({"content": " answer."}) + chunk({}, "stop")
                   + chunk({}, usage=answer["usage"]) + b"data: [DONE]\n\n")

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if b'"stream":true' in body.replace(b" ", b""):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            try:
                await resp.prepare(request)
                await resp.write(stream_body)
                await resp.write_eof()
            except (ConnectionResetError, ConnectionError):
                pass  # the load generator hung up at the end of a run
            return resp
        return web.Response(body=plain, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# ----------------------------------------------------------------------------- helpers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened")


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    import httpx

    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("service not ready")


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process (and its reaped children), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks


def wrk(url: str, *, conns: int, duration: int, body: dict, token: str | None, cpu: str,
        measure_pid: int | None = None) -> dict:
    script = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)  # noqa: SIM115
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    script.write("wrk.method = 'POST'\n")
    script.write(f"wrk.body = {json.dumps(json.dumps(body))}\n")
    for k, v in headers.items():
        script.write(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n")
    script.close()
    cmd = ["taskset", "-c", cpu, "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency", "-s", script.name, url]
    cpu0 = proc_cpu_s(measure_pid) if measure_pid else None
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    cpu1 = proc_cpu_s(measure_pid) if measure_pid else None
    os.unlink(script.name)

    def ms(label: str) -> float | None:
        m = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return None
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    res = {"rps": rps, "p50_ms": ms("50"), "p90_ms": ms("90"), "p99_ms": ms("99"), "requests": total,
           "non2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(0) if errors else None}
    if cpu0 is not None and cpu1 is not None and total:
        # CPU the service actually got, per request: independent of how busy the machine is
        res["service_cpu_ms_per_request"] = round((cpu1 - cpu0) * 1000 / total, 4)
        res["service_cpu_share"] = round((cpu1 - cpu0) / duration, 3)
    return res


class Service:
    def __init__(self, db_url: str, policy_dir: Path, upstream: str, cpu: str, *,
                 sqlite_synchronous: str = "FULL") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PE_BENCH_TOKEN": TOKEN, "PE_BENCH_UPSTREAM": upstream,
               "POLICYENGINE_DATABASE_URL": db_url, "POLICYENGINE_POLICY_PATH": str(policy_dir),
               "POLICYENGINE_SEED_KEYS": json.dumps([{"token_env": "PE_BENCH_TOKEN", "tenant": "bench",
                                                      "roles": ["app", "admin"]}]),
               "POLICYENGINE_KEY_CACHE_TTL_S": "30", "POLICYENGINE_SQLITE_SYNCHRONOUS": sqlite_synchronous,
               "POLICYENGINE_APPROVALS_LINK_SECRET": "bench-link-secret-0123456789abcdef",
               "POLICYENGINE_APPROVALS_CALLBACK_SECRET": "bench-callback-secret-0123456789"}
        self.log = open(tempfile.mktemp(suffix=".log"), "w+b")  # noqa: SIM115 - lives as long as the service
        self.proc = subprocess.Popen(["taskset", "-c", cpu, str(BIN / "policyengine"), "serve", "--port",
                                      str(self.port), "--log-level", "warning"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_ready(self.url, self.proc)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def count_rows(db_url: str) -> int:
    import sqlalchemy as sa

    from policyengine.store import make_sync_engine

    e = make_sync_engine(db_url)
    with e.connect() as c:
        n = c.execute(sa.text("SELECT count(*) FROM decisions")).scalar_one()
    e.dispose()
    return int(n)


def reset_pg(url: str, schema: str) -> str:
    import sqlalchemy as sa

    from policyengine.store import make_sync_engine

    e = make_sync_engine(url)
    with e.begin() as c:
        c.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        c.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    e.dispose()
    return f"{url}?options=-csearch_path%3D{schema}"


# ----------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--skip-chat", action="store_true")
    ap.add_argument("--only", choices=["all", "evaluate", "plain", "stream"], default="all",
                    help="measure only this case (the evaluate warm-up still runs)")
    ap.add_argument("--sqlite-modes", default="FULL,NORMAL",
                    help="SQLite synchronous modes to measure (FULL: survives power loss; NORMAL: survives a "
                         "process crash)")
    ap.add_argument("--service-cpu", default="0")
    ap.add_argument("--load-cpu", default="1")
    ap.add_argument("--json", help="write the results here as JSON")
    ap.add_argument("--keep-awake", action="store_true",
                    help="keep the service's CPU out of its idle state during the concurrency-1 chat runs (see KeepAwake)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="measure the concurrency-1 chat latencies this many times and report the median run")
    ap.add_argument("--no-plain-proxy", action="store_true",
                    help="skip the plain aiohttp proxy measured beside the gateway")
    ap.add_argument("--upstream", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--plain-proxy", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--to", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.upstream:
        run_upstream(a.port)
        return
    if a.plain_proxy:
        run_plain_proxy(a.port, a.to)
        return
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="pe-bench-"))
    pdir = work / "policies"
    pdir.mkdir()
    (pdir / "bench.policy").write_text(POLICY)
    up_port = free_port()
    upstream = subprocess.Popen(["taskset", "-c", a.load_cpu, sys.executable, __file__, "--upstream", "--port",
                                 str(up_port)], start_new_session=True)
    wait_port(up_port, upstream)
    up_url = f"http://127.0.0.1:{up_port}/v1"
    proxy = None if a.no_plain_proxy or a.skip_chat or a.only == "evaluate" else PlainProxy(up_url, a.service_cpu)
    # the service's CPU only: a spinner on the load generator's CPU competes with wrk and the upstream
    awake = a.service_cpu if a.keep_awake else None
    results: dict = {"cpus": os.cpu_count(), "duration_s": a.duration, "evaluate": {}, "chat": {},
                     "c1_cpus_kept_awake": awake}
    d = a.duration
    evaluate_body = {"action": "classify_ticket", "actor": "bench", "fields": {"ticket": 42}}
    chat_body = {"model": "auto", "messages": [{"role": "user", "content": "Summarise my last ticket."}]}
    try:
        configs = []
        if a.db in ("sqlite", "both"):
            configs += [("sqlite-" + m.strip().upper(), m.strip().upper()) for m in a.sqlite_modes.split(",")]
        if a.db in ("postgres", "both"):
            configs.append(("postgres", None))
        for db, mode in configs:
            db_url = f"sqlite:///{work / 'bench.db'}" if mode else reset_pg(PG_URL, "pe_bench")
            if mode:
                for f in work.glob("bench.db*"):
                    f.unlink()
            svc = Service(db_url, pdir, up_url, a.service_cpu, sqlite_synchronous=mode or "FULL")
            try:
                wrk(svc.url + "/v1/evaluate", conns=4, duration=2, body=evaluate_body, token=TOKEN,
                    cpu=a.load_cpu)  # warm-up
                if a.only in ("plain", "stream"):
                    results["chat"][db] = bench_chat(svc, up_url, chat_body, d, a.load_cpu, db, only=a.only,
                                                     proxy=proxy, awake_cpus=awake, repeat=a.repeat)
                    continue
                before = count_rows(db_url)
                r1 = wrk(svc.url + "/v1/evaluate", conns=1, duration=d, body=evaluate_body, token=TOKEN,
                         cpu=a.load_cpu, measure_pid=svc.proc.pid)
                r32 = wrk(svc.url + "/v1/evaluate", conns=32, duration=d, body=evaluate_body, token=TOKEN,
                          cpu=a.load_cpu, measure_pid=svc.proc.pid)
                time.sleep(0.5)
                rows = count_rows(db_url) - before
                ok = r1["requests"] - r1["non2xx"] + r32["requests"] - r32["non2xx"]
                results["evaluate"][db] = {"c1": r1, "c32": r32, "rows_committed": rows,
                                           "2xx_responses_counted_by_wrk": ok, "loadavg": loadavg()}
                print(f"[evaluate/{db}] load {loadavg()} c=1: {r1['rps']:.0f} req/s p50 {r1['p50_ms']:.3f} ms p99 "
                      f"{r1['p99_ms']:.3f} ms | c=32: {r32['rps']:.0f} req/s p50 {r32['p50_ms']:.2f} ms p99 "
                      f"{r32['p99_ms']:.2f} ms, service CPU {r32.get('service_cpu_ms_per_request')} ms/req "
                      f"(got {r32.get('service_cpu_share')} of a core) | rows {rows} vs 2xx {ok}", flush=True)
                if mode and not a.skip_chat and a.only == "all":
                    results["chat"][db] = bench_chat(svc, up_url, chat_body, d, a.load_cpu, db, proxy=proxy,
                                                     awake_cpus=awake, repeat=a.repeat)
            finally:
                svc.stop()
    finally:
        if proxy is not None:
            proxy.stop()
        upstream.send_signal(signal.SIGTERM)
        upstream.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def bench_chat(svc: Service, up_url: str, body: dict, d: int, cpu: str, label: str, only: str = "all",
               proxy: PlainProxy | None = None, awake_cpus: str | None = None, repeat: int = 1) -> dict:
    out: dict = {}
    stream_body = {**body, "stream": True}
    direct = up_url + "/chat/completions"
    gw = svc.url + "/v1/chat/completions"
    wrk(gw, conns=4, duration=2, body=body, token=TOKEN, cpu=cpu)  # warm-up (connection pools)
    for name, b in (("plain", body), ("stream", stream_body)):
        if only not in ("all", name):
            continue
        runs = []  # (direct, gateway, plain proxy) at c=1, `repeat` times back to back
        with KeepAwake(awake_cpus):
            for _ in range(max(repeat, 1)):
                runs.append((wrk(direct, conns=1, duration=d, body=b, token=None, cpu=cpu),
                             wrk(gw, conns=1, duration=d, body=b, token=TOKEN, cpu=cpu, measure_pid=svc.proc.pid),
                             wrk(proxy.url, conns=1, duration=d, body=b, token=None, cpu=cpu) if proxy else None))
        # the run with the median added latency stands for all of them (the VM's noise moves single
        # runs by a few tenths of a millisecond); every run's figure is kept in the JSON
        runs.sort(key=lambda r: r[1]["p50_ms"] - r[0]["p50_ms"])
        dir1, gw1, px1 = runs[len(runs) // 2]
        gw32 = wrk(gw, conns=32, duration=d, body=b, token=TOKEN, cpu=cpu, measure_pid=svc.proc.pid)
        dir32 = wrk(direct, conns=32, duration=d, body=b, token=None, cpu=cpu)
        px32 = wrk(proxy.url, conns=32, duration=d, body=b, token=None, cpu=cpu, measure_pid=proxy.proc.pid) \
            if proxy else None
        added = gw1["p50_ms"] - dir1["p50_ms"]
        out[name] = {"direct_c1": dir1, "gateway_c1": gw1, "gateway_c32": gw32, "direct_c32": dir32,
                     "added_p50_ms_c1": round(added, 3),
                     "added_p99_ms_c1": round(gw1["p99_ms"] - dir1["p99_ms"], 3), "loadavg": loadavg(),
                     "added_p50_ms_c1_runs": [round(g["p50_ms"] - r["p50_ms"], 3) for r, g, _ in runs],
                     "c1_cpus_kept_awake": awake_cpus}
        line = (f"[chat/{label}/{name}] direct c=1 p50 {dir1['p50_ms']:.3f} ms | gateway c=1 p50 {gw1['p50_ms']:.3f} ms "
                f"(added {added:.3f} ms{', median of ' + str(len(runs)) + ' runs' if len(runs) > 1 else ''}"
                f"{', CPUs kept awake' if awake_cpus else ''}) | gateway c=32 {gw32['rps']:.0f} "
                f"req/s (non-2xx {gw32['non2xx']}), service CPU {gw32.get('service_cpu_ms_per_request')} ms/req (got "
                f"{gw32.get('service_cpu_share')} of a core) | direct c=32 {dir32['rps']:.0f} req/s")
        if px1 and px32:
            out[name].update(plain_proxy_c1=px1, plain_proxy_c32=px32,
                             plain_proxy_added_p50_ms_c1=round(px1["p50_ms"] - dir1["p50_ms"], 3))
            line += (f" || plain aiohttp proxy (no policy, no log): c=1 added {px1['p50_ms'] - dir1['p50_ms']:.3f} ms, "
                     f"c=32 {px32['rps']:.0f} req/s, {px32.get('service_cpu_ms_per_request')} ms CPU/req")
        print(line, flush=True)
    return out


class KeepAwake:
    """Keep CPUs out of their idle state while the concurrency-1 latencies are measured.

    On this VM an idle vCPU halts (cpuidle `haltpoll` with `guest_halt_poll_ns` = 0), and waking it
    costs ~0.15-0.25 ms. A proxied request crosses CPUs four times (wrk -> service -> upstream ->
    service -> wrk) where the direct call crosses none (wrk and the upstream share a CPU), so at
    concurrency 1 every proxy pays ~0.6-0.9 ms of wake-ups that are not its own work. A busy loop per
    CPU under SCHED_IDLE keeps them awake (a busy server never halts either); SCHED_IDLE runs only
    when nothing else wants the CPU and any woken task preempts it at once. The figures without it
    are the default; the flag adds the run with it.
    """

    def __init__(self, cpus: str | None) -> None:
        self.cpus = [c for c in (cpus or "").split(",") if c]
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> KeepAwake:
        for c in self.cpus:
            self.procs.append(subprocess.Popen(["taskset", "-c", c, "chrt", "--idle", "0", sys.executable, "-c",
                                                "while True: pass"]))
        return self

    def __exit__(self, *exc: object) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


class PlainProxy:
    """The floor of any Python proxy in this layout: uvicorn (uvloop, httptools) forwarding each POST to the
    upstream with one aiohttp session and relaying the answer — no policy, no log, no auth, no failover."""

    def __init__(self, upstream: str, cpu: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/chat/completions"
        self.proc = subprocess.Popen(["taskset", "-c", cpu, sys.executable, __file__, "--plain-proxy", "--port",
                                      str(self.port), "--to", upstream + "/chat/completions"],
                                     start_new_session=True)
        wait_port(self.port, self.proc)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)


def run_plain_proxy(port: int, target: str) -> None:
    import aiohttp
    import uvicorn

    session: aiohttp.ClientSession | None = None

    async def app(scope: dict, receive, send) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        more = True
        while more:
            m = await receive()
            body, more = body + m.get("body", b""), m.get("more_body", False)
        if session is None:
            session = aiohttp.ClientSession()
        async with session.post(target, data=body, headers={"content-type": "application/json"}) as r:
            ctype = r.headers.get("content-type", "application/json").encode()
            await send({"type": "http.response.start", "status": r.status, "headers": [(b"content-type", ctype)]})
            async for chunk in r.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, loop="uvloop",
                http="httptools")


def asgi_one(app, raw: bytes, path: str = "/v1/chat/completions"):
    """A coroutine function sending one POST of `raw` to `path` through `app`'s ASGI call (no HTTP
    server), as the in-process benchmarks do; it asserts a 200."""
    scope = {"type": "http", "method": "POST", "path": path, "root_path": "", "scheme": "http",
             "query_string": b"", "http_version": "1.1", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
             "headers": [(b"content-type", b"application/json"), (b"authorization", f"Bearer {TOKEN}".encode()),
                         (b"content-length", str(len(raw)).encode())]}

    async def one() -> None:
        done = asyncio.Event()
        state = {"sent": False, "status": 0}

        async def receive() -> dict:
            if not state["sent"]:
                state["sent"] = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(m: dict) -> None:
            if m["type"] == "http.response.start":
                state["status"] = m["status"]
            elif not m.get("more_body"):
                done.set()

        await app(dict(scope), receive, send)
        assert state["status"] == 200, state

    return one


if __name__ == "__main__":
    asyncio.set_event_loop_policy(None)
    main()
