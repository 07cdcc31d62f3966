"""Loopback ports for tests that start servers or need an address nothing answers on."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on `host` that nothing listens on at the moment of the call (the kernel's choice).

    The probe socket is closed before returning, so the port is free but not reserved:
    bind it soon, or use it as an address where connections are refused.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
