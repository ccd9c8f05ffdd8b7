"""Run by the seed's own Python library (PyPI ``pipelens`` 1.14.1, Python >= 3.12), not by us:
``python _seed_client.py BASE_URL RUN_ID realtime|batch`` reports one run with nested steps;
``python _seed_client.py BASE_URL RUN_ID burst N`` one real-time run of N zero-work steps, each
with a record (one POST per event, all fired at once, none retried)."""

import asyncio
import contextlib
import sys

from pipelens.transport.http_transport import HttpTransport, HttpTransportOptions

from pipelens import Pipeline, Step


async def burst(base_url: str, run_id: str, steps: int) -> None:
    transport = HttpTransport(HttpTransportOptions(base_url=base_url, batch_logs=False))
    pipeline = Pipeline(
        "seed-burst", {"run_id": run_id, "auto_save": "real_time", "transport": transport}
    )

    async def logic(st: Step) -> int:
        for i in range(steps):

            async def work(step: Step, i: int = i) -> int:
                await step.record("i", i)
                return i

            await st.step(f"s{i}", work)
        return steps

    await pipeline.track(logic)
    await transport.flush_and_stop()
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    await asyncio.wait(pending, timeout=30) if pending else None


async def main(base_url: str, run_id: str, mode: str, *args: str) -> None:
    if mode == "burst":
        await burst(base_url, run_id, int(args[0]))
        return
    transport = HttpTransport(
        HttpTransportOptions(
            base_url=base_url, batch_logs=mode == "batch", flush_interval_seconds=0.2
        )
    )
    pipeline = Pipeline(
        "seed-demo", {"run_id": run_id, "auto_save": "real_time", "transport": transport}
    )

    async def logic(st: Step) -> str:
        async def child(step: Step) -> list[int]:
            await step.record("n", 2)
            return [1, 2]

        async def nested(step: Step) -> str:
            async def leaf(_: Step) -> str:
                return "leaf"

            return await step.step("leaf", leaf)

        async def broken(_: Step) -> None:
            raise ValueError("boom")

        await st.step("child", child)
        await st.step("nested", nested)
        with contextlib.suppress(ValueError):  # the seed re-raises a step's error
            await st.step("broken", broken)
        return "done"

    await pipeline.track(logic)
    await transport.flush_and_stop()
    # Real-time mode fires its POSTs as tasks without waiting for them: let them land.
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    await asyncio.wait(pending, timeout=10) if pending else None


asyncio.run(main(*sys.argv[1:]))
