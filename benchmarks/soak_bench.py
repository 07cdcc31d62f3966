"""Soak: sustained plain chat through the gateway, with the decision log's disk use and the RSS sampled.

    .venv/bin/python benchmarks/soak_bench.py [--minutes 10] [--sync FULL] [--conns 32] [--json out.json]

Layout as in `api_bench.py` (whose fake upstream and service launcher it reuses): `policyengine serve`
(one worker, SQLite at the given `synchronous`, decision log on) pinned to CPU 0; wrk and the fake upstream
pinned to CPU 1. wrk runs back to back in slices of `--slice` seconds for `--minutes`; after each slice the
script samples the WAL and database file sizes and the service's RSS (`/proc/<pid>/status`). It prints
one line per slice (with the service's CPU per request split by thread, from `/proc/<pid>/task/*/stat`:
the event loop, the decision log's writer, its checkpoint thread, the rest) and a summary: the largest WAL seen, the database size, RSS at the end of the first
and the last minute, and the rows committed against the 2xx responses counted by wrk.

Issue 22 asked for the WAL to stay under 64 MB in steady state over a 10-minute soak, with a flat RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import api_bench as ab  # a sibling script, not a package


def rss_mb(pid: int) -> float:
    """The process's resident set size, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of `pid`'s threads so far, by role: the main thread (the event
    loop), the decision log's writer and checkpoint threads (by the OS names the log gives them:
    store/_osthread.py), and the rest."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {"loop": 0.0, "writer": 0.0, "ckpt": 0.0, "other": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:  # the thread ended between the listing and the read
            continue
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        cpu = (int(fields[11]) + int(fields[12])) / tick
        role = ("loop" if task.name == str(pid) else "ckpt" if comm == "pe-log-ckpt"
                else "writer" if comm == "pe-log-writer" else "other")
        out[role] += cpu
    return out


def size_mb(p: Path) -> float:
    try:
        return p.stat().st_size / 1e6
    except FileNotFoundError:
        return 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--slice", type=int, default=15, help="seconds per wrk run (one sample each)")
    ap.add_argument("--sync", default="FULL", help="sqlite_synchronous (FULL, the default, or NORMAL)")
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--stream", action="store_true", help="streamed chat instead of plain")
    ap.add_argument("--service-cpu", default="0")
    ap.add_argument("--load-cpu", default="1")
    ap.add_argument("--json", help="write the samples and the summary here")
    a = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed: apt-get install wrk")
    work = Path(tempfile.mkdtemp(prefix="pe-soak-"))
    pdir = work / "policies"
    pdir.mkdir()
    (pdir / "bench.policy").write_text(ab.POLICY)
    db = work / "soak.db"
    wal = Path(f"{db}-wal")
    up_port = ab.free_port()
    upstream = subprocess.Popen(["taskset", "-c", a.load_cpu, sys.executable, ab.__file__, "--upstream", "--port",
                                 str(up_port)], start_new_session=True)
    body = {"model": "auto", "messages": [{"role": "user", "content": "Summarise my last ticket."}],
            **({"stream": True} if a.stream else {})}
    samples: list[dict] = []
    try:
        ab.wait_port(up_port, upstream)
        svc = ab.Service(f"sqlite:///{db}", pdir, f"http://127.0.0.1:{up_port}/v1", a.service_cpu,
                         sqlite_synchronous=a.sync.upper())
        try:
            url = svc.url + "/v1/chat/completions"
            ab.wrk(url, conns=4, duration=2, body=body, token=ab.TOKEN, cpu=a.load_cpu)  # warm-up
            rows0 = ab.count_rows(f"sqlite:///{db}")
            t0 = time.monotonic()
            ok = 0
            while time.monotonic() - t0 < a.minutes * 60:
                cpu0 = thread_cpu_s(svc.proc.pid)
                r = ab.wrk(url, conns=a.conns, duration=a.slice, body=body, token=ab.TOKEN, cpu=a.load_cpu,
                           measure_pid=svc.proc.pid)
                cpu1 = thread_cpu_s(svc.proc.pid)
                ok += r["requests"] - r["non2xx"]
                by_thread = {k: round((cpu1[k] - cpu0[k]) * 1000 / max(r["requests"], 1), 3) for k in cpu1}
                s = {"t_s": round(time.monotonic() - t0, 1), "rps": r["rps"], "non2xx": r["non2xx"],
                     "cpu_ms_per_req": r.get("service_cpu_ms_per_request"), "wal_mb": round(size_mb(wal), 2),
                     "db_mb": round(size_mb(db), 2), "rss_mb": round(rss_mb(svc.proc.pid), 1),
                     "cpu_ms_per_req_by_thread": by_thread}
                samples.append(s)
                print(f"[soak {s['t_s']:7.1f}s] {s['rps']:7.0f} req/s non-2xx {s['non2xx']} CPU {s['cpu_ms_per_req']} "
                      f"ms/req ({' '.join(f'{k} {v}' for k, v in by_thread.items())}) | WAL {s['wal_mb']:8.2f} MB  db {s['db_mb']:8.2f} MB  RSS {s['rss_mb']:6.1f} MB",
                      flush=True)
            time.sleep(0.5)
            rows = ab.count_rows(f"sqlite:///{db}") - rows0
        finally:
            svc.stop()
    finally:
        upstream.send_signal(signal.SIGTERM)
        upstream.wait(10)
    per_min = max(1, round(60 / a.slice))
    first, last = samples[:per_min], samples[-per_min:]
    summary = {
        "minutes": a.minutes, "sqlite_synchronous": a.sync.upper(), "conns": a.conns, "stream": a.stream,
        "wal_max_mb": max(s["wal_mb"] for s in samples), "wal_end_mb": samples[-1]["wal_mb"],
        "db_end_mb": samples[-1]["db_mb"], "rss_first_minute_mb": first[-1]["rss_mb"],
        "rss_max_mb": max(s["rss_mb"] for s in samples), "rss_end_mb": last[-1]["rss_mb"],
        "rss_growth_after_first_minute_mb": round(last[-1]["rss_mb"] - first[-1]["rss_mb"], 1),
        "rps_median": sorted(s["rps"] for s in samples)[len(samples) // 2],
        "rows_committed": rows, "2xx_counted_by_wrk": ok, "loadavg_end": ab.loadavg(),
    }
    print(json.dumps(summary, indent=2))
    if a.json:
        Path(a.json).write_text(json.dumps({"summary": summary, "samples": samples}, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
