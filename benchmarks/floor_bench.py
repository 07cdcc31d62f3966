"""Where the gateway's CPU per plain chat goes: the HTTP layer's floor beside the whole gateway.

    .venv/bin/python benchmarks/floor_bench.py [--duration 6] [--rounds 2] [--granian]

Issue #22 asks whether a faster server or HTTP layer underneath would close the gap to a Rust
gateway. This measures the floor such a change could reach, side by side in one run: the same
fake upstream (api_bench.py's, aiohttp), the same wrk load (plain chat, concurrency 32), the
process under test pinned to CPU 0 and wrk + the upstream to CPU 1, rounds interleaved:

* `forwarder/uvicorn`: uvicorn (uvloop, httptools) serving a 20-line ASGI app that forwards each
  POST through the gateway's own HTTP/1.1 client (`policyengine.adapters.h1.H1Pool`) and relays
  the answer: no auth, no policy, no decision log, no failover. What any server + client pair
  costs in this layout.
* `forwarder/granian-rsgi` (with `--granian`, needs `pip install granian`, not a dependency):
  the same forwarder on granian's Rust HTTP server through its RSGI interface.
* `gateway`: `policyengine serve` with api_bench.py's policy (SQLite FULL, the default), every
  decision committed before its answer.

Printed per target: req/s, the CPU the process tree spent per request (every thread and child
process; `/proc`), and the gateway's CPU over the floor's. The difference is the gateway's own
work (auth, the policy, the chain walk, the two decision rows and their commits), which no server
swap removes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api_bench as ab

BODY = {"model": "auto", "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                      {"role": "user", "content": "Classify this ticket: my invoice is wrong."}],
        "max_tokens": 64, "temperature": 0}

# The forwarder's apps, served as `floor_bench:asgi` by uvicorn and `floor_bench:rsgi` by granian; the upstream's URL.
UPSTREAM_ENV = "PE_FLOOR_UPSTREAM"


def _forwarder_apps():
    from policyengine.adapters.h1 import H1Pool

    target = os.environ[UPSTREAM_ENV] + "/chat/completions"
    headers = {"content-type": "application/json"}
    pool: list[H1Pool] = []

    async def forward(body: bytes) -> tuple[int, bytes]:
        if not pool:
            pool.append(H1Pool())
        r = await pool[0].request("POST", target, headers, body)
        return r.status, await r.read()

    async def asgi(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            m = await receive()
            body, more = body + m.get("body", b""), m.get("more_body", False)
        status, data = await forward(body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": data})

    async def rsgi(scope, proto) -> None:
        status, data = await forward(await proto())
        proto.response_bytes(status, [("content-type", "application/json")], data)

    return asgi, rsgi


_apps: tuple | None = None


def __getattr__(name: str):
    global _apps
    if name in ("asgi", "rsgi"):
        if _apps is None:
            _apps = _forwarder_apps()
        return _apps[0] if name == "asgi" else _apps[1]
    raise AttributeError(name)


def tree_cpu_s(pid: int) -> float:
    """utime + stime of `pid` and every live descendant (granian serves from a child process)."""
    total = 0.0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            total += ab.proc_cpu_s(p)
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo += [int(k) for k in kids]
    return total


class Forwarder:
    def __init__(self, kind: str, upstream: str, cpu: str) -> None:
        self.port = ab.free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/chat/completions"
        here = str(Path(__file__).resolve().parent)
        env = {**os.environ, UPSTREAM_ENV: upstream, "PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", "")}
        if kind == "uvicorn":
            cmd = [str(ab.BIN / "uvicorn"), "--no-access-log", "--log-level", "warning", "--loop", "uvloop",
                   "--http", "httptools", "--port", str(self.port), "floor_bench:asgi"]
        else:
            granian = shutil.which("granian", path=str(ab.BIN)) or "granian"
            cmd = [granian, "--interface", "rsgi", "--loop", "uvloop", "--workers", "1", "--runtime-threads", "1",
                   "--no-ws", "--log-level", "warning", "--port", str(self.port), "floor_bench:rsgi"]
        self.proc = subprocess.Popen(["taskset", "-c", cpu, *cmd], env=env, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ab.wait_port(self.port, self.proc)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(15)


def measure(url: str, pid: int, token: str | None, duration: int, cpu: str) -> tuple[float, float]:
    """(req/s, CPU ms per request of the process tree) at concurrency 32; every answer must be a 2xx."""
    ab.wrk(url, conns=32, duration=2, body=BODY, token=token, cpu=cpu)  # warm-up
    c0 = tree_cpu_s(pid)
    r = ab.wrk(url, conns=32, duration=duration, body=BODY, token=token, cpu=cpu)
    c1 = tree_cpu_s(pid)
    if r["non2xx"] or not r["requests"]:
        raise SystemExit(f"{url}: {r['non2xx']} non-2xx answers of {r['requests']}")
    return r["rps"], (c1 - c0) * 1000 / r["requests"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--granian", action="store_true", help="also granian's RSGI server (pip install granian)")
    ap.add_argument("--service-cpu", default="0")
    ap.add_argument("--load-cpu", default="1")
    a = ap.parse_args()
    up_port = ab.free_port()
    upstream = subprocess.Popen(["taskset", "-c", a.load_cpu, sys.executable, ab.__file__, "--upstream", "--port",
                                 str(up_port)], start_new_session=True)
    ab.wait_port(up_port, upstream)
    up = f"http://127.0.0.1:{up_port}/v1"
    tmp = Path(tempfile.mkdtemp(prefix="pe-floor-"))
    (tmp / "policies").mkdir()
    (tmp / "policies" / "bench.policy").write_text(ab.POLICY)
    kinds = ["uvicorn"] + (["granian-rsgi"] if a.granian else [])
    targets: dict[str, object] = {}
    try:
        for k in kinds:
            targets[f"forwarder/{k}"] = Forwarder("uvicorn" if k == "uvicorn" else "granian", up, a.service_cpu)
        targets["gateway"] = ab.Service(f"sqlite:///{tmp}/pe.db", tmp / "policies", up, a.service_cpu)
        print(f"plain chat, c=32, {a.rounds} rounds x {a.duration}s, load {ab.loadavg()}", flush=True)
        res: dict[str, list[tuple[float, float]]] = {n: [] for n in targets}
        for rnd in range(a.rounds):
            names = list(targets)
            for n in names[rnd % len(names):] + names[:rnd % len(names)]:  # rotate who goes first
                t = targets[n]
                if isinstance(t, ab.Service):
                    res[n].append(measure(t.url + "/v1/chat/completions", t.proc.pid, ab.TOKEN, a.duration,
                                          a.load_cpu))
                else:
                    res[n].append(measure(t.url, t.proc.pid, None, a.duration, a.load_cpu))  # type: ignore[attr-defined]
        floor = statistics.median(c for _, c in res["forwarder/uvicorn"])
        print(f"{'target':<26}{'req/s':>10}{'CPU ms/req':>12}{'x floor':>9}")
        for n, rows in res.items():
            rps, cpu = statistics.median(r for r, _ in rows), statistics.median(c for _, c in rows)
            print(f"{n:<26}{rps:>10,.0f}{cpu:>12.3f}{cpu / floor:>9.2f}")
        gw = statistics.median(c for _, c in res["gateway"])
        print(f"the gateway's own work above the uvicorn floor: {gw - floor:.3f} ms CPU per request "
              f"({(gw - floor) / gw * 100:.0f} % of its CPU); load {ab.loadavg()}")
    finally:
        for t in targets.values():
            t.stop()  # type: ignore[attr-defined]
        upstream.send_signal(signal.SIGTERM)
        upstream.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
