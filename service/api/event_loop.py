"""The asyncio event loop both servers run on: uvloop's where it is installed.

grpc.aio does a call's protocol work on its event loop (each completion the poller
thread hands over, the call's task, the hand-off to a call thread and back), so the
loop's cost per wake-up is part of every call's latency. With uvloop the fixed
per-call cost (``benchmarks.latency_ab --request invalid``, 3,000 calls, one idle
2-core machine) fell from 1.57 to 1.42 ms p50, server CPU from 1.35 to 1.18 ms a
call (docs/operations.md).
"""

from __future__ import annotations

import asyncio


def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop: uvloop's, or asyncio's own where uvloop is not installed (Windows)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()
