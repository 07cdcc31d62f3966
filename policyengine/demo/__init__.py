"""`policyengine demo`: the whole control layer in one command, against a SIMULATED model fleet.

    from policyengine.demo import DemoOptions, run_demo
    exit_code = asyncio.run(run_demo(DemoOptions(keep_db=Path("demo.db"))))

`ServiceProcess` and `free_port` (in `procs`) are reused by the scale-out tests.
"""

from __future__ import annotations

from .procs import ServiceError, ServiceProcess, free_port
from .runner import DemoError, DemoOptions, run_demo

__all__ = ["DemoError", "DemoOptions", "ServiceError", "ServiceProcess", "free_port", "run_demo"]
