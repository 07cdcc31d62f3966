"""The OS-level name of a thread, so `top -H`, `ps -L`, py-spy and `/proc/<pid>/task/*/comm` tell
the decision log's threads apart (CPython 3.11 names its threads for Python only)."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from typing import Any

__all__ = ["name_os_thread"]

_PR_SET_NAME = 15


@functools.cache
def _prctl() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    path = ctypes.util.find_library("c")
    return ctypes.CDLL(path, use_errno=True).prctl if path else None


def name_os_thread(name: str) -> None:
    """Give the calling thread the OS-level name `name` (Linux keeps its first 15 bytes). Does
    nothing where that is not available; never raises (a name is for people, not for the service)."""
    try:
        prctl = _prctl()
        if prctl is not None:
            prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except Exception:  # see the docstring
        pass
