"""Blocking database work off the event loop, on the DS's own worker threads.

Starlette's ``run_in_threadpool`` (anyio's ``to_thread``) builds a cancel scope, a capacity
limiter and a backend lookup around every call; profiled under load that bookkeeping cost
more of the event loop than the hand-off itself (a fifth of the GIL samples at 400
messages/s). This is the same contract with an ``asyncio`` executor: the call runs in a copy
of the caller's context (``metrics.note_submission`` writes through it), and a cancelled
caller still waits for its call to finish, so nothing a request started runs on unseen after
its answer.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

# As many as anyio's default limiter allowed: requests blocked on the database (a PostgreSQL
# connection pool, the SQLite writer's turn) must not starve the rest.
MAX_THREADS = 40

_executor: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        _executor = ThreadPoolExecutor(MAX_THREADS, thread_name_prefix="mlspy-ds")
    return _executor


async def to_thread(fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """``fn(*args, **kwargs)`` on a worker thread, awaited."""
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    future = asyncio.get_running_loop().run_in_executor(_pool(), call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        # The thread cannot be stopped: let it finish before the cancellation goes on.
        if not future.done():
            await asyncio.wait([future])
        raise
