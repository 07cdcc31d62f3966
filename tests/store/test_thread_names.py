"""The decision log's threads carry OS-level names, so operators (top -H, ps -L, py-spy) and
benchmarks/soak_bench.py can tell the writer and the checkpoint thread from the event loop."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from policyengine.store import DecisionLogger, LogEntry, upgrade
from policyengine.store._osthread import name_os_thread

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="OS thread names are read from /proc/self/task (Linux only)")


def _names() -> set[str]:
    out = set()
    for comm in Path("/proc/self/task").glob("*/comm"):
        try:
            out.add(comm.read_text().strip())
        except OSError:  # the thread ended between the listing and the read
            continue
    return out


def test_name_os_thread_names_only_the_calling_thread_and_truncates_to_15_bytes() -> None:
    seen: list[str] = []

    def run() -> None:
        name_os_thread("pe-a-name-longer-than-fifteen")
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == ["pe-a-name-longe"]
    assert Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip() != "pe-a-name-longe"


async def test_the_log_writer_and_checkpoint_threads_are_named(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    upgrade(url)
    logger = DecisionLogger(url)
    await logger.start()
    try:
        for _ in range(3):
            await logger.log(LogEntry(kind="evaluate", tenant="acme", action={"action": "chat"},
                                      decision={"effect": "allow", "action": "chat", "policy_hash": "ab" * 32}))
        logger._start_pass()  # the checkpoint thread starts with its first pass
        logger._ckpt_future.result(timeout=30)  # its initializer ran before the pass
        names = _names()
    finally:
        await logger.aclose()
    assert {"pe-log-writer", "pe-log-ckpt"} <= names
