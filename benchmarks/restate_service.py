"""The Restate service of the step benchmark's Restate anchor (served by hypercorn): one
handler that runs ``n`` ``ctx.run`` steps whose action returns at once and answers how long
each took, measured inside the handler (the step as an agent's code sees it)."""

from __future__ import annotations

import time

import restate

steps = restate.Service("BenchSteps")


async def _noop() -> str:
    return "ok"


@steps.handler()
async def run(ctx: restate.Context, n: int) -> list[float]:
    took: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        await ctx.run_typed(f"s{i}", _noop)
        took.append((time.perf_counter() - t0) * 1000)
    return took


app = restate.app(services=[steps])
