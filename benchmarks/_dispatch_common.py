"""Shared helpers for the dispatch benchmarks: subprocess upstreams and latency stats."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def upstream(*, latency_ms: float = 0.0, status: int = 200, cpu: int | None = 1, extra: tuple[str, ...] = ()):
    """A fast simulated upstream in its own process (pinned to `cpu` when possible); `extra`: more
    fastserver options (`--fail-rate`, `--slow-rate`, `--slow-ms`, `--seed`)."""
    port = free_port()
    cmd = [sys.executable, "-m", "policyengine.simulate.fastserver", "--port", str(port),
           "--latency-ms", str(latency_ms), "--status", str(status), *extra]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    if cpu is not None and hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(proc.pid, {cpu})
    try:
        deadline = time.time() + 15
        while time.time() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        proc.wait(5)


def pin_self(cpu: int = 0) -> None:
    if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() > 1:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


def summary(lat_s: list[float]) -> dict:
    ms = [v * 1000 for v in lat_s]
    return {"p50_ms": pct(ms, 50), "p99_ms": pct(ms, 99), "mean_ms": statistics.fmean(ms) if ms else float("nan")}
