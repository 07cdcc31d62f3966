"""Short, stable file names for reports."""

from __future__ import annotations

import os
from functools import lru_cache


@lru_cache(maxsize=4096)
def display_path(path: str) -> str:
    """`path` relative to the working directory when it lies under it, else unchanged."""
    if not path or not os.path.isabs(path):
        return path
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel
