"""Calling a handler: the live worker and ``mesh replay --to-agent`` run it the same way."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from mesh.event import Event
from mesh.runtime.context import Context
from mesh.runtime.threads import HandlerThreads

__all__ = ["invoke", "with_context"]


def with_context(handler: Callable[..., Any]) -> Callable[..., Any]:
    """*handler* as ``handler(event, ctx)``: handlers may omit the ``ctx`` parameter."""
    params = [
        p
        for p in inspect.signature(handler).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(params) >= 2:
        return handler
    if inspect.iscoroutinefunction(handler):

        async def without_ctx_async(event: Event, _ctx: Any) -> Any:
            return await handler(event)

        return without_ctx_async

    def without_ctx(event: Event, _ctx: Any) -> Any:
        return handler(event)

    return without_ctx


async def invoke(
    handler: Callable[..., Any],
    event: Event,
    ctx: Context,
    *,
    is_async: bool,
    timeout_s: float | None,
    threads: HandlerThreads,
) -> Any:
    """Run ``handler(event, ctx)``; TimeoutError after *timeout_s* (None: no limit).

    A coroutine function runs on the loop; a plain one on one of *threads*, in a copy of
    the caller's context so its log lines carry the event's ids. A sync handler's
    timeout counts from when it starts, and stops the waiting, not the thread.
    """
    try:
        if is_async:
            async with asyncio.timeout(timeout_s):
                return await handler(event, ctx)
        return await threads.run(handler, event, ctx, timeout_s=timeout_s)
    except TimeoutError as exc:
        if timeout_s is not None and not exc.args:  # asyncio's is bare: say what happened
            exc.args = (f"handler took over {timeout_s}s",)
        raise
