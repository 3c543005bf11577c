"""ib_async's blocking API against the simulator served from a background thread."""

from __future__ import annotations

import asyncio

from ib_async import IB

from backend.ib.simulator.examples import basic_scenario
from backend.ib.simulator.thread import SimulatorThread


def test_blocking_client_against_threaded_simulator() -> None:
    # The blocking API runs this thread's event loop; own it so it can be closed afterwards
    # (an unclosed loop and socket would surface as ResourceWarnings in a later test).
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        with SimulatorThread(basic_scenario()) as handle:
            ib = IB()
            try:
                ib.connect("127.0.0.1", handle.port, clientId=4, timeout=5)
                assert ib.managedAccounts() == ["DU1234567"]
                assert len(ib.reqPositions()) == 3
                assert handle.call(lambda sim: sim.connected_client_ids) == [4]
                assert len(ib.fills()) == 4
            finally:
                ib.disconnect()
                loop.run_until_complete(asyncio.sleep(0))  # let the transport close
        assert not handle.running
    finally:
        asyncio.set_event_loop(None)
        loop.close()
