"""Take the next item of an async iterator without suspending when it is already available.

`ready_or_pending(it)` runs `it.__anext__()` up to its first suspension: if the item was
ready it is returned at once (no timer, no task switch); otherwise the suspended step is
finished with `await finish(*pending)` in the same task, so timeouts and cancellation reach
it exactly as they would reach `await it.__anext__()`. Used to coalesce SSE events that are
already available into one send, and to read upstream chunks that are already buffered
without arming an idle timer for each.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any


class _Pass:
    """Yield one object to the running task and hand back what the task sends (see `ready_or_pending`)."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __await__(self) -> Any:
        return (yield self.obj)


END = object()


def ready_or_pending(it: AsyncIterator[Any]) -> tuple[Any, Any]:
    """Step `it` once without suspending: `(item, None)` if an item (or `END`) was ready,
    `(None, (coro, yielded))` if it has to wait (finish it with `finish`)."""
    coro = it.__anext__()
    if not hasattr(coro, "send"):  # an awaitable that is not a coroutine: step its iterator
        coro = coro.__await__()
    try:
        yielded = coro.send(None)
    except StopIteration as e:
        return e.value, None
    except StopAsyncIteration:
        return END, None
    return None, (coro, yielded)


async def finish(coro: Any, yielded: Any, exc: BaseException | None = None) -> Any:
    """Drive a suspended `__anext__` coroutine to completion inside the current task (throwing `exc`
    into it first, if given: then it ends the generator, which is left closable)."""
    sent: Any = None
    while True:
        if exc is None:
            try:
                sent = await _Pass(yielded)
            except BaseException as e:  # cancelled or timed out while waiting: hand it to the step
                exc = e
        try:
            yielded = coro.send(sent) if exc is None else coro.throw(exc)
        except StopIteration as stop:
            return stop.value
        except StopAsyncIteration:
            return END
        exc = None
