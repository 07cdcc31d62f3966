"""What one fsync costs on this machine's disk, back to back and with the gaps a lone request leaves.

    .venv/bin/python benchmarks/fsync_bench.py [--commits 800] [--dir DIR]

Under `sqlite_synchronous=FULL` (the service's default) a decision row is answered only after its
commit's fsync, so at one request at a time that fsync's latency is a floor under the latency the
gateway adds (issue 19's side-effecting MCP tool, issue 22's c=1 chat). This prints, for each idle
gap between two commits (0: back to back, as under load; 0.5-2 ms: as one client at a time leaves
them), the p50 / p90 / p99 of:

* `fdatasync` after overwriting one 4 KiB block of a file that already has its size (no metadata
  to journal: the device's own flush);
* a SQLite commit in WAL mode with `synchronous=FULL`: one row of 1 KB in a table with a primary
  key (its WAL fsync included), the WAL pre-grown and restarted, so commits overwrite it in place,
  as the decision log's do in steady state;
* the same commit with `synchronous=NORMAL` (no fsync), for scale.

The gap is slept, not spun (spinning gave the same figures on this machine: the cost is the
virtual disk's, not a CPU waking up). Nothing here is tuned; the files live in `--dir` (default: a
temporary directory on the disk that holds the system's temp dir).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

GAPS_MS = (0.0, 0.5, 1.0, 2.0)


def _pcts(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2], xs[int(n * 0.9)], xs[min(n - 1, int(n * 0.99))]


def _timed(op: Callable[[], None], commits: int, gap_s: float) -> list[float]:
    out = []
    for _ in range(commits):
        if gap_s:
            time.sleep(gap_s)
        t = time.perf_counter()
        op()
        out.append((time.perf_counter() - t) * 1000)
    return out


def raw_fdatasync(work: Path) -> tuple[Callable[[], None], Callable[[], None]]:
    fd = os.open(work / "raw.bin", os.O_WRONLY | os.O_CREAT, 0o600)
    os.pwrite(fd, b"\0" * 65536, 0)
    os.fsync(fd)
    block = [0]

    def op() -> None:
        block[0] = (block[0] + 1) % 16
        os.pwrite(fd, b"x" * 4096, block[0] * 4096)
        os.fdatasync(fd)

    return op, lambda: os.close(fd)


def sqlite_commit(work: Path, sync: str) -> tuple[Callable[[], None], Callable[[], None]]:
    path = work / f"wal-{sync}.db"
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute(f"PRAGMA synchronous={sync}")
    con.execute("PRAGMA wal_autocheckpoint=0")
    con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    con.execute("BEGIN")
    for _ in range(4000):  # grow the WAL, then start it over: later commits overwrite it in place
        con.execute("INSERT INTO t (v) VALUES (?)", ("y" * 1000,))
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(RESTART)")
    row = "x" * 1000

    def op() -> None:
        con.execute("BEGIN IMMEDIATE")
        con.execute("INSERT INTO t (v) VALUES (?)", (row,))
        con.execute("COMMIT")

    return op, con.close


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--commits", type=int, default=800, help="commits per gap and kind")
    ap.add_argument("--dir", help="where the files go (default: a temporary directory)")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="pe-fsync-"))
    work.mkdir(parents=True, exist_ok=True)
    kinds = {"fdatasync, 4 KiB overwrite": lambda: raw_fdatasync(work),
             "SQLite commit, synchronous=FULL": lambda: sqlite_commit(work, "FULL"),
             "SQLite commit, synchronous=NORMAL": lambda: sqlite_commit(work, "NORMAL")}
    print(f"{args.commits} commits per line, files in {work}, load {os.getloadavg()[0]:.1f}")
    print(f"{'':36} {'gap ms':>6}  {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7}")
    for name, make in kinds.items():
        op, close = make()
        try:
            _timed(op, 50, 0)  # warm-up
            for gap in GAPS_MS:
                p50, p90, p99 = _pcts(_timed(op, args.commits, gap / 1000))
                print(f"{name:36} {gap:6.1f}  {p50:7.3f} {p90:7.3f} {p99:7.3f}")
        finally:
            close()


if __name__ == "__main__":
    main()
