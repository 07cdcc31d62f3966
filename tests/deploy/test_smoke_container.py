"""The compose stack on a real container engine: examples/deploy/smoke.sh, run whole.

It builds the images, starts two replicas behind nginx with PostgreSQL, Redis, the simulated
fleet and an SMTP sink, drives traffic with the openai SDK, checks each step from the decision
log and `verify-log`, and tears everything down. It takes minutes (the first build longer), so it
runs only when asked: `PE_CONTAINER_TESTS=1` and a reachable Docker engine. The README
test command (and so CI) leaves it out; it says so when it skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "examples" / "deploy" / "smoke.sh"

pytestmark = pytest.mark.container


def _engine_problem() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no docker client (apt-get install docker.io docker-compose debootstrap)"
    r = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30, check=False)
    if r.returncode != 0:
        return f"the Docker engine is not reachable (start dockerd): {r.stderr.strip()[:200]}"
    if shutil.which("docker-compose") is None and subprocess.run(
            [docker, "compose", "version"], capture_output=True, check=False).returncode != 0:
        return "neither `docker compose` nor docker-compose is installed"
    return None


def test_compose_stack_smoke() -> None:
    if os.environ.get("PE_CONTAINER_TESTS") != "1":
        pytest.skip("container smoke test not requested: set PE_CONTAINER_TESTS=1 to build and run "
                    "the compose stack (minutes; CI leaves it out, see README)")
    problem = _engine_problem()
    if problem:
        pytest.skip(problem)
    r = subprocess.run([str(SMOKE)], cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
    tail = (r.stdout + r.stderr)[-6000:]
    assert r.returncode == 0, tail
    assert "checks held" in r.stdout and "FAILED" not in r.stdout, tail
    assert "nothing left running" in r.stderr, tail
