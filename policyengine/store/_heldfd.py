"""Descriptors of SQLite's own files that this process opens itself, held open until it exits.

Closing any descriptor of a file drops every POSIX (fcntl) lock the process holds on that file,
the locks of its SQLite connections included (fcntl(2); SQLite's unix VFS defers its own closes for
this reason). A WAL-mode connection holds a shared lock on the database file while it is open and
its read locks on the `-shm` file while it reads: dropping them lets another process take the
database for its own (its last connection would checkpoint and delete the WAL under ours). The
decision log reads the WAL index and flushes the database file through descriptors of its own, so
it never closes them: `held_fd` opens one per file and process, and hands the same one back for as
long as the path names that file.
"""

from __future__ import annotations

import os
import threading

__all__ = ["held_fd"]

_lock = threading.Lock()
# realpath -> (descriptor, st_dev, st_ino). A descriptor whose path now names another file (the
# database deleted and made again) stays open too: a connection may still use the old file.
_held: dict[str, tuple[int, int, int]] = {}


def held_fd(path: str) -> int:
    """A read-only descriptor of `path`, never closed (see the module docstring): the same one for
    every caller in this process while `path` names the same file. Raises OSError when `path`
    cannot be opened."""
    real = os.path.realpath(path)
    st = os.stat(real)
    with _lock:
        held = _held.get(real)
        if held is not None and held[1:] == (st.st_dev, st.st_ino):
            return held[0]
        fd = os.open(real, os.O_RDONLY)
        opened = os.fstat(fd)
        _held[real] = (fd, opened.st_dev, opened.st_ino)
        return fd
