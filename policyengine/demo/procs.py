"""Child processes and ports the demo (and the scale-out tests) start and must stop.

`ServiceProcess` runs the real `policyengine serve` in its own process group so
that stopping it stops everything it spawned; `free_port` asks the kernel for
an unused loopback port. Nothing here outlives `stop()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


class ServiceError(RuntimeError):
    """The service did not start (the message carries the end of its log)."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Linux: the kernel sends SIGTERM to this child if the process that started it dies
    (even by SIGKILL), so a crashed demo or test never leaves a service running."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def serve_command() -> list[str]:
    """`policyengine serve` with this interpreter (works without the console script on PATH)."""
    return [sys.executable, "-c", "from policyengine.cli import app; app()", "serve"]


class ServiceProcess:
    """One `policyengine serve` process on 127.0.0.1:`port`, configured by environment."""

    def __init__(self, *, port: int, env: Mapping[str, str], log_path: Path, name: str = "policyengine",
                 args: list[str] | None = None, drop_prefixes: tuple[str, ...] = ()) -> None:
        self.port = port
        self.name = name
        self.log_path = log_path
        self.args = list(args or [])
        inherited = {k: v for k, v in os.environ.items() if not (drop_prefixes and k.startswith(drop_prefixes))}
        self._env = {**inherited, **env, "POLICYENGINE_HOST": LOOPBACK, "POLICYENGINE_PORT": str(port),
                     "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        self._proc: asyncio.subprocess.Process | None = None
        self._log = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def start(self, *, timeout: float = 120.0) -> None:
        """Spawn and wait until /readyz answers 200 (or raise ServiceError with the log tail)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = await asyncio.create_subprocess_exec(
            *serve_command(), *self.args, env=self._env, stdout=self._log, stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if self._proc.returncode is not None:
                    raise ServiceError(f"{self.name} exited with status {self._proc.returncode} while "
                                       f"starting; its log ({self.log_path}):\n{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.get(f"{self.url}/readyz")
                    if r.status_code == 200:
                        return
                if time.monotonic() > deadline:
                    await self.stop()
                    raise ServiceError(f"{self.name} not ready on {self.url} after {timeout:.0f}s; its log "
                                       f"({self.log_path}):\n{self.log_tail()}")
                await asyncio.sleep(0.2)

    def _signal(self, sig: int) -> None:
        if self._proc is None or self._proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, sig)  # its own session: the group holds only its children

    async def stop(self, *, grace: float = 15.0) -> int | None:
        """SIGTERM (graceful: the decision log flushes), then SIGKILL after `grace` seconds."""
        proc = self._proc
        if proc is None:
            return None
        if proc.returncode is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace)
            except TimeoutError:
                self._signal(signal.SIGKILL)
                await proc.wait()
        # reap anything left in the group (a worker that ignored SIGTERM)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode

    async def kill(self) -> None:
        """Crash it (SIGKILL, no shutdown): used to show a replica dying."""
        self._signal(signal.SIGKILL)
        if self._proc is not None:
            await self._proc.wait()
