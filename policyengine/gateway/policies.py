"""The policy set serving requests, and its atomic reload.

A reload parses and lints the policy files off the event loop; if anything is
wrong the new set is refused and the old one keeps serving. On success the
(policy, dispatcher) pair is swapped in one assignment, so a request sees
either the old pair or the new one, never a mix. The old dispatcher is closed
after a grace period (requests in flight finish on it).

A large set (over `SUBPROCESS_BYTES` of source) must not starve requests while it
loads, and a worker thread does: it holds the GIL, and every time the event loop
wakes (a socket, the log writer) it waits up to the switch interval (5 ms) for it,
so an 8,000-rule reload took evaluate p99 from 13 to 191 ms (security #15.14). So
parsing and linting, most of the work, run in a separate process (a fresh
interpreter for the reload, then gone); the checked syntax tree comes back pickled
in chunks, and the event loop itself unpickles and compiles it (closures do not
pickle) in slices of `SLICE_S`, letting requests run between slices. Full garbage collections wait while
the set loads (`policyengine.dsl.deferred_full_gc`), and the loaded set is then
frozen out of the collector's way (`gc.freeze`), as the service does with the
first one at start: otherwise the first full collection afterwards walks every
object of the new set in one go, on whichever thread allocates. A retired large
set is freed in slices too, once nothing holds it. Smaller sets (under about 3,000
rules) load in a worker thread as before: starting an interpreter costs about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import pickle
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

log = logging.getLogger("policyengine.gateway.policies")

DispatcherFactory = Callable[[Any], Any]  # CompiledPolicy -> ChainDispatcher

SUBPROCESS_BYTES = 256 * 1024  # about 3,000 rules: above this, parse and lint in a separate process
SLICE_S = 0.002  # the longest the event loop compiles before letting requests run


class ReloadResult(BaseModel):
    """The outcome of one reload: `ok` False means refused (the old set, `hash`, still serves; `error`
    and `diagnostics` say why); `changed` False with `ok` means the files compiled to the serving hash."""

    ok: bool
    changed: bool = False
    hash: str | None = None  # the hash serving after the call
    previous_hash: str | None = None
    name: str | None = None
    version: Any = None
    files: list[str] = Field(default_factory=list)
    diagnostics: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None
    loaded_at: float = Field(default_factory=time.time)


@dataclass(frozen=True)
class _Serving:
    policy: Any  # CompiledPolicy
    dispatcher: Any
    loaded_at: float


def _load(paths: Sequence[str]) -> Any:
    """Parse, lint and compile the policy set; refuse it (raise) if it does not load, or if it
    uses a signal whose optional dependencies are not installed
    (`policyengine.signals.EmbeddingsNotInstalled`, naming the rule and the extra)."""
    from policyengine.dsl import load_policy_set
    from policyengine.signals.requirements import require_available

    _require_paths(paths)
    policy = load_policy_set(list(paths))
    require_available(policy)  # find_spec only: imports nothing
    return policy


def _require_paths(paths: Sequence[str]) -> None:
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"policy path not found: {', '.join(missing)}")


async def _stage_in_process(sources: dict[str, str]) -> tuple[list[dict[str, Any]], list[Any]]:
    """`policyengine.dsl.stage_sources(sources)` in a fresh interpreter (a plain child process, not
    multiprocessing: that would import this process's `__main__` again in the child)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the modules this process imports
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from policyengine.dsl import _stage_main; _stage_main()",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)
    try:
        out, err = await proc.communicate(pickle.dumps(sources, pickle.HIGHEST_PROTOCOL))
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    if proc.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"exit {proc.returncode}: {tail[0]}")
    result: tuple[list[dict[str, Any]], list[Any]] = pickle.loads(out)  # a list of bytes: a copy, quick
    return result


async def _load_large(sources: dict[str, str]) -> Any:
    """`_load` for a large set: parse and lint in a child interpreter, then unpickle and compile on
    the event loop in slices of SLICE_S (see the module docstring)."""
    from policyengine.dsl import STAGE_CHUNK_ITEMS, PolicyError, deferred_full_gc
    from policyengine.dsl import ast as dsl_ast
    from policyengine.dsl.compiler import compile_steps
    from policyengine.dsl.diagnostics import Diagnostic
    from policyengine.evaluator import CompiledPolicy
    from policyengine.signals.requirements import require_available

    try:
        errors, staged = await _stage_in_process(sources)
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError) as exc:  # no process here: as before
        log.warning("policy load in a separate process failed (%s): loading in a thread", exc)
        return await asyncio.to_thread(_load_sources, sources)
    if errors:
        raise PolicyError([Diagnostic(**d) for d in errors])
    clock = time.perf_counter
    with deferred_full_gc():
        files = []
        deadline = clock() + SLICE_S
        for path, text, chunks in staged:
            items: list[Any] = []
            for c in chunks:
                items.extend(pickle.loads(c))
                if clock() >= deadline:
                    await asyncio.sleep(0)
                    deadline = clock() + SLICE_S
            files.append(dsl_ast.PolicyFile(path=path, text=text, items=items))
        del staged
        steps = compile_steps(files)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                ir = done.value
                break
            if clock() >= deadline:
                await asyncio.sleep(0)
                deadline = clock() + SLICE_S
        policy = CompiledPolicy.from_ir(ir)
        await asyncio.to_thread(require_available, policy)  # a walk over every rule: not in one go here
        del steps, ir
        for f in files:  # the tree goes too, a slice at a time (freeing it all at once takes ~100 ms)
            while f.items:
                del f.items[-STAGE_CHUNK_ITEMS:]
                if clock() >= deadline:
                    await asyncio.sleep(0)
                    deadline = clock() + SLICE_S
        del files
        gc.freeze()  # the new set is long-lived: out of every later full collection's way
    return policy


FREE_POLL_S = 1.0  # how often a retired large set is looked at until nothing else holds it


def _source_size(policy: Any) -> int:
    return sum(len(t) for t in getattr(policy, "sources", {}).values())


async def _free_in_slices(policy: Any, grace_s: float) -> None:
    """Free a retired policy set a slice at a time once only this task holds it (requests in
    flight and the retired dispatcher let go of it); after twice the grace period, just drop it."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + 2 * grace_s + 10
    while sys.getrefcount(policy) > 2:  # this frame's reference and getrefcount's argument
        if loop.time() > give_up:
            return
        await asyncio.sleep(FREE_POLL_S)
    parts: list[Any] = []
    seen: set[int] = set()
    for plan in [*policy.plans.values(), policy.global_plan]:
        for rules in (plan.denies, plan.holds, plan.authorizes):
            if id(rules) not in seen:  # plans share the global holds' tuple
                seen.add(id(rules))
                parts.extend(rules)
    parts.extend(policy.routes)
    parts.extend(policy.choices)
    policy.plans, policy.routes, policy.route_index, policy.choices = {}, [], {}, []
    del seen
    clock = time.perf_counter
    deadline = clock() + SLICE_S
    while parts:
        del parts[-20:]
        if clock() >= deadline:
            await asyncio.sleep(0)
            deadline = clock() + SLICE_S


async def _load_async(paths: Sequence[str]) -> Any:
    """`_load`, without starving the event loop: a small set in a worker thread, a large one
    through `_load_large`."""
    from policyengine.dsl import read_sources

    def read() -> dict[str, str]:
        _require_paths(paths)
        return read_sources(list(paths))

    sources = await asyncio.to_thread(read)
    if sum(len(t) for t in sources.values()) < SUBPROCESS_BYTES:
        return await asyncio.to_thread(_load_sources, sources)
    return await _load_large(sources)


def _load_sources(sources: dict[str, str]) -> Any:
    """`_load` of sources already read."""
    from policyengine.dsl import compile_sources
    from policyengine.signals.requirements import require_available

    policy = compile_sources(sources)
    require_available(policy)
    return policy


class PolicyHolder:
    """Holds the policy set serving and its dispatcher; `reload` swaps both in one assignment or not at all.

    A request reads `snapshot()` once and sees one consistent pair. A retired dispatcher is
    closed after `grace_s` seconds, so requests in flight on it finish.
    """

    def __init__(self, paths: Sequence[str], dispatcher_factory: DispatcherFactory | None = None, *,
                 on_loaded: Callable[[Any, str | None], Awaitable[None]] | None = None,
                 grace_s: float = 60.0) -> None:
        self.paths = list(paths)
        self._factory = dispatcher_factory
        self._on_loaded = on_loaded
        self._serving: _Serving | None = None
        self._lock = asyncio.Lock()
        self._grace_s = grace_s
        self._retired: dict[asyncio.Task[None], Any] = {}  # closing after the grace period
        self._freeing: set[asyncio.Task[None]] = set()  # large retired policy sets, freed in slices
        self.last_result: ReloadResult | None = None

    # -- what requests use --------------------------------------------------------------

    @property
    def current(self) -> Any:
        """The CompiledPolicy serving now; RuntimeError before the first successful load."""
        if self._serving is None:
            raise RuntimeError("no policy loaded")
        return self._serving.policy

    @property
    def dispatcher(self) -> Any:
        """The dispatcher built for the serving policy (None without a factory); RuntimeError before the first load."""
        if self._serving is None:
            raise RuntimeError("no policy loaded")
        return self._serving.dispatcher

    def snapshot(self) -> _Serving:
        """The (policy, dispatcher) pair, read once, for one request."""
        if self._serving is None:
            raise RuntimeError("no policy loaded")
        return self._serving

    @property
    def loaded(self) -> bool:
        """True once a policy set has loaded (from then on one always serves)."""
        return self._serving is not None

    # -- reload ---------------------------------------------------------------------------

    async def reload(self, *, by: str | None = None) -> ReloadResult:
        """Load the policy files again (one reload at a time) and serve them if they compile and the
        `on_loaded` hook, when set, succeeds (it is given `by`, who asked). A set that does not load,
        or that the hook fails on, is refused as `ok=False`, not raised, and the old set keeps serving."""
        async with self._lock:
            prev = self._serving
            prev_hash = getattr(prev.policy, "hash", None) if prev else None
            try:
                policy = await _load_async(self.paths)
            except Exception as exc:  # lint errors, missing files, broken grammar: refuse
                diags = [d.model_dump(mode="json") if hasattr(d, "model_dump") else {"message": str(d)}
                         for d in getattr(exc, "diagnostics", [])]
                res = ReloadResult(ok=False, hash=prev_hash, previous_hash=prev_hash, diagnostics=diags,
                                   files=self.paths, error=f"{type(exc).__name__}: {exc}")
                log.error("policy reload refused (still serving %s): %s", prev_hash, res.error)
                self.last_result = res
                return res
            if prev is not None and policy.hash == prev_hash:
                res = ReloadResult(ok=True, changed=False, hash=prev_hash, previous_hash=prev_hash,
                                   name=policy.name, version=policy.version, files=sorted(policy.sources))
                self.last_result = res
                return res
            try:  # e.g. a model base_url the outbound policy refuses: refuse the set, keep serving
                dispatcher = self._factory(policy) if self._factory else None
            except Exception as exc:
                res = ReloadResult(ok=False, hash=prev_hash, previous_hash=prev_hash, files=self.paths,
                                   diagnostics=[d.model_dump(mode="json") for d in getattr(exc, "diagnostics", [])
                                                if hasattr(d, "model_dump")],
                                   error=f"{type(exc).__name__}: {exc}")
                log.error("policy reload refused (still serving %s): %s", prev_hash, res.error)
                self.last_result = res
                return res
            if self._on_loaded is not None:
                try:
                    await self._on_loaded(policy, by)
                except Exception as exc:  # e.g. the database is down: do not serve an unrecorded version
                    res = ReloadResult(ok=False, hash=prev_hash, previous_hash=prev_hash, files=self.paths,
                                       error=f"could not record policy version {policy.hash[:12]}: "
                                             f"{type(exc).__name__}: {exc}")
                    log.error("policy reload refused: %s", res.error)
                    self.last_result = res
                    if dispatcher is not None:
                        await dispatcher.aclose()
                    return res
            self._serving = _Serving(policy=policy, dispatcher=dispatcher, loaded_at=time.time())
            if prev is not None and prev.dispatcher is not None:
                t = asyncio.create_task(self._retire(prev.dispatcher))
                self._retired[t] = prev.dispatcher
                t.add_done_callback(lambda task: self._retired.pop(task, None))
            if prev is not None and _source_size(prev.policy) >= SUBPROCESS_BYTES:
                # freeing a large set in one go stalls the loop (171 ms at 20k rules): in slices,
                # once nothing else holds it
                f = asyncio.create_task(_free_in_slices(prev.policy, self._grace_s))
                self._freeing.add(f)
                f.add_done_callback(self._freeing.discard)
            res = ReloadResult(ok=True, changed=True, hash=policy.hash, previous_hash=prev_hash,
                               name=policy.name, version=policy.version, files=sorted(policy.sources))
            log.info("policy %s v%s (%s) serving", policy.name, policy.version, policy.hash[:12])
            self.last_result = res
            return res

    async def _retire(self, dispatcher: Any) -> None:
        await asyncio.sleep(self._grace_s)
        with contextlib.suppress(Exception):
            await dispatcher.aclose()

    async def aclose(self) -> None:
        """Close every dispatcher now: the retired ones (their grace period cut short) and the serving one."""
        for f in list(self._freeing):
            f.cancel()
        for t, dispatcher in list(self._retired.items()):
            t.cancel()
            with contextlib.suppress(Exception):
                await dispatcher.aclose()
        if self._serving is not None and self._serving.dispatcher is not None:
            with contextlib.suppress(Exception):
                await self._serving.dispatcher.aclose()
