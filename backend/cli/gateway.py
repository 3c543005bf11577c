"""``portfolio gateway``: run the IB Gateway simulator (TWS API server version 178) until Ctrl-C.

Point any ib_async / TWS API client at it: ``IB().connect("127.0.0.1", 4002, clientId=1)``.
Without ``--scenario`` it serves the built-in example (a stock, a future x50, an option x100,
prices stepping every second). See docs/simulator.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backend.ib.simulator import Faults


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=4002, help="TCP port (default 4002; 0 = any)")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--scenario", type=Path, default=None,
                        help="scenario file (.json/.yaml); default: the built-in example")
    parser.add_argument("--faults", type=Path, default=None,
                        help="fault knobs file (.json/.yaml mapping of Faults fields)")
    parser.add_argument("--step-seconds", type=float, default=None,
                        help="seconds between price-path steps (overrides the scenario)")


def load_faults(path: Path | None) -> Faults:
    from backend.ib.simulator import Faults

    if path is None:
        return Faults()
    import json

    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    return Faults.from_dict(data)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib
    import dataclasses
    import logging
    import signal

    from backend.errors import InvalidInputError
    from backend.ib.simulator import GatewaySimulator, Scenario
    from backend.ib.simulator.examples import basic_scenario

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        scenario = (
            Scenario.from_file(args.scenario)
            if args.scenario
            else basic_scenario(price_step_seconds=1.0)
        )
        faults = load_faults(args.faults)
    except (InvalidInputError, OSError) as exc:
        print(f"portfolio gateway: {exc}")
        return 2
    if args.step_seconds is not None:
        scenario = dataclasses.replace(scenario, price_step_seconds=args.step_seconds or None)

    async def serve() -> None:
        async with GatewaySimulator(
            scenario, faults=faults, host=args.host, port=args.port
        ) as sim:
            print(
                f"IB Gateway simulator (server version 178) on {args.host}:{sim.port}, "
                f"accounts {','.join(scenario.accounts)}. Ctrl-C stops it.",
                flush=True,
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):  # not on Windows
                    loop.add_signal_handler(sig, stop.set)
            await stop.wait()

    try:
        asyncio.run(serve())
    except KeyboardInterrupt:
        print("stopped")
    except OSError as exc:
        print(f"portfolio gateway: cannot listen on {args.host}:{args.port}: {exc}")
        return 1
    return 0
