"""Provider keys without restarts: a secrets file read at start, on SIGHUP and when it changes.

The policy names every key by environment variable (`keys [env("QWEN_KEY_1")]`) and the
dispatcher reads the variable at each call, so a new value takes effect on the next request
once it is in the process's environment. `SecretsFile` puts it there: the file (`NAME=value`
lines, dotenv syntax, read with python-dotenv) or directory (one file per variable, named
after it, as a Kubernetes Secret volume mounts it) named by the `secrets_file` setting is
loaded into `os.environ` at start, again on SIGHUP, and whenever its modification time or size
changes (polled every `secrets_poll_s`). A variable that disappears from the file is removed.

When a key's value changes, the cooldowns it earned with the old value are cleared
(`clear_changed_keys`): its key-scoped cooldowns (`key:<model>/<NAME>`) and a model-scoped
cooldown whose reason is a credential failure on a deployment that uses that key. A fixed key
serves on the next request instead of after the 300 s auth cooldown.

Values are never logged or kept in clear outside the environment: change detection compares
SHA-256 digests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Iterable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policyengine.state import key_scope, model_scope
from policyengine.types import EnvRef

if TYPE_CHECKING:
    from policyengine.gateway.runtime import Runtime

__all__ = ["AUTH_REASONS", "SecretsFile", "clear_changed_keys", "fingerprints", "key_names", "load_at_start",
           "reload_secrets", "remember", "watch_secrets"]

log = logging.getLogger("policyengine.gateway")

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# cooldown reasons that a new credential can cure (as policyengine.dispatch sets them)
AUTH_REASONS = frozenset({"auth_invalid", "auth_expired", "permission_denied", "quota_exhausted", "key_missing"})


def _digest(value: str | None) -> str | None:
    return None if value is None else hashlib.sha256(value.encode("utf-8")).hexdigest()


class SecretsFile:
    """One secrets file or directory, loaded into `environ` (default `os.environ`).

    `load()` reads it and applies it: every variable it defines is set, every variable an
    earlier load set and this one does not is removed. Returns the names whose value changed.
    A file that cannot be read leaves the environment as it is (logged) and returns no change.
    """

    def __init__(self, path: str | Path, environ: MutableMapping[str, str] | None = None) -> None:
        self.path = Path(path)
        self.environ = os.environ if environ is None else environ
        self._owned: set[str] = set()  # names this file set
        self._stamp: tuple[float, int] | None = None

    def _read(self) -> dict[str, str]:
        p = self.path
        if not p.exists():  # python-dotenv reads a missing file as empty: that would remove every key
            raise FileNotFoundError(f"no such file or directory: {p}")
        if p.is_dir():
            out = {}
            for f in sorted(p.iterdir()):
                if f.name.startswith(".") or not _NAME.match(f.name) or not f.is_file():
                    continue  # Kubernetes' ..data links, editor files
                out[f.name] = f.read_text(encoding="utf-8").rstrip("\r\n")
            return out
        from dotenv import dotenv_values

        values = dotenv_values(p, interpolate=False)
        return {k: v for k, v in values.items() if v is not None and _NAME.match(k)}

    def stamp(self) -> tuple[float, int] | None:
        """(mtime, size) of the file, or of the directory's newest entry; None when missing."""
        try:
            p = self.path
            if p.is_dir():
                entries = [p.stat(), *(f.stat() for f in p.iterdir())]
                return max(e.st_mtime for e in entries), sum(e.st_size for e in entries)
            st = p.stat()
            return st.st_mtime, st.st_size
        except OSError:
            return None

    def load(self) -> set[str]:
        """Apply the file to the environment now; the names whose value changed."""
        self._stamp = self.stamp()
        try:
            values = self._read()
        except (OSError, UnicodeDecodeError) as exc:
            log.error("secrets file %s could not be read (%s: %s): the environment is unchanged", self.path,
                      type(exc).__name__, exc)
            return set()
        changed = set()
        for name, value in values.items():
            if self.environ.get(name) != value:
                changed.add(name)
                self.environ[name] = value
        for name in self._owned - set(values):
            if self.environ.pop(name, None) is not None:
                changed.add(name)
        self._owned = set(values)
        if changed:
            log.info("secrets file %s: %d variable(s) changed: %s", self.path, len(changed), ", ".join(sorted(changed)))
        return changed

    def changed_on_disk(self) -> bool:
        """True when the file's (mtime, size) differs from the last load's."""
        return self.stamp() != self._stamp


def key_names(policy: Any) -> dict[str, list[tuple[str, str | None]]]:
    """Every env variable the policy's models read as a credential (keys, header values) ->
    the (state id, key id) pairs that use it (key id None: a header, not a rotated key)."""
    from policyengine.dispatch.balance import targets_of

    out: dict[str, list[tuple[str, str | None]]] = {}
    for spec in getattr(policy, "models", {}).values():
        for t in targets_of(spec):
            for k in t.spec.keys:
                out.setdefault(k.name, []).append((t.state_id, k.name))
            for v in t.spec.headers.values():
                if isinstance(v, EnvRef):
                    out.setdefault(v.name, []).append((t.state_id, None))
    return out


def fingerprints(names: Iterable[str], environ: MutableMapping[str, str] | None = None) -> dict[str, str | None]:
    """name -> SHA-256 of its current value (None: unset)."""
    env = os.environ if environ is None else environ
    return {n: _digest(env.get(n)) for n in names}


async def clear_changed_keys(rt: Runtime, changed: Iterable[str]) -> list[str]:
    """Clear the cooldowns the old values of the `changed` variables earned (see the module
    docstring). Returns the scopes cleared."""
    uses = key_names(rt.policies.current)
    cleared: list[str] = []
    touched: set[str] = set()
    for name in changed:
        for sid, key_id in uses.get(name, ()):
            touched.add(sid)
            if key_id is not None:
                scope = key_scope(sid, key_id)
                if await rt.state.get_cooldown(scope) is not None:
                    await rt.state.clear_cooldown(scope)
                    cleared.append(scope)
    for sid in sorted(touched):
        scope = model_scope(sid)
        cd = await rt.state.get_cooldown(scope)
        if cd is not None and cd.reason in AUTH_REASONS:
            await rt.state.clear_cooldown(scope)
            cleared.append(scope)
    if cleared:
        log.warning("a key changed: cleared %s", ", ".join(cleared))
    return cleared


class _Watch:
    """The running process's secrets file and the key fingerprints last seen (one per runtime)."""

    def __init__(self, file: SecretsFile | None) -> None:
        self.file = file
        self.seen: dict[str, str | None] = {}


def _watch_of(rt: Runtime) -> _Watch:
    w = getattr(rt, "_pe_secrets", None)
    if w is None:
        path = getattr(rt.settings, "secrets_file", None)
        w = _Watch(SecretsFile(path) if path else None)
        rt._pe_secrets = w  # type: ignore[attr-defined]
        w.seen = fingerprints(key_names(rt.policies.current)) if rt.policies.loaded else {}
    return w


async def reload_secrets(rt: Runtime) -> list[str]:
    """Re-read the secrets file (when one is configured), then clear the cooldowns of every key
    whose value differs from the last time this was called (whatever changed it). Returns the
    names of the variables that changed."""
    w = _watch_of(rt)
    if w.file is not None:
        w.file.load()
    now = fingerprints(key_names(rt.policies.current))
    changed = sorted(n for n, d in now.items() if w.seen.get(n, d) != d)
    w.seen = now
    if changed:
        await clear_changed_keys(rt, changed)
    return changed


async def watch_secrets(rt: Runtime, interval: float) -> None:
    """Poll the secrets file every `interval` seconds; reload when it changed on disk (runs until cancelled)."""
    w = _watch_of(rt)
    if w.file is None:
        return
    while True:
        await asyncio.sleep(interval)
        with contextlib.suppress(Exception):
            if w.file.changed_on_disk():
                await reload_secrets(rt)


def load_at_start(rt: Runtime) -> None:
    """Load the secrets file into the environment before anything reads a key or a base URL
    (the start of the lifespan, before the policy set loads)."""
    w = _watch_of(rt)
    if w.file is not None:
        w.file.load()


def remember(rt: Runtime) -> None:
    """Take the serving policy's key fingerprints as the baseline for the next `reload_secrets`."""
    _watch_of(rt).seen = fingerprints(key_names(rt.policies.current))
