"""Child process of the SIGKILL test: ingest a JSON stream through a PortfolioManager.

Usage: python kill_child.py URI STREAM_JSON SEED [--no-flush]. Prints the number of messages
handed over after each chunk (the parent kills it at some point), then ``done`` once all is
durable, and then waits to be killed. Between chunks it flushes now and then, unless
``--no-flush`` (then only at the end).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path

from arcticdb_ext import set_config_int  # type: ignore[import-not-found]

from backend.core.portfolio_manager import PortfolioManager

set_config_int("StorageLock.WaitMs", 10)  # see tests/pm/conftest.py


async def main(uri: str, stream: list[object], seed: int, flushes: bool) -> None:
    rng = random.Random(seed)
    async with PortfolioManager(uri, max_batch=rng.choice((16, 64, 256))) as pm:
        sent = 0
        while sent < len(stream):
            size = rng.randint(1, 40)
            for msg in stream[sent:sent + size]:
                await pm.process_message(msg)
            sent = min(len(stream), sent + size)
            print(sent, flush=True)
            if rng.random() < 0.1 and flushes:
                await pm.flush()
            await asyncio.sleep(rng.choice((0, 0.001, 0.003)))
        await pm.flush()
        print("done", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], json.loads(Path(sys.argv[2]).read_text()), int(sys.argv[3]),
                     "--no-flush" not in sys.argv[4:]))
