"""A wire-level IB Gateway simulator (TWS API server version 178) for tests, demos and users.

Public API::

    from backend.ib.simulator import Scenario, GatewaySimulator, Faults

    async with GatewaySimulator(Scenario.from_file("examples/scenarios/two_accounts.yaml"),
                                faults=Faults(), port=0) as sim:
        ...  # ib_async: await IB().connectAsync("127.0.0.1", sim.port, clientId=1)

See docs/simulator.md for the scenario format, the fault knobs and the fidelity limits.
"""

from backend.ib.simulator.exchange import Exchange
from backend.ib.simulator.faults import ExecCorrection, Faults, corrected_exec_id
from backend.ib.simulator.protocol import SERVER_VERSION
from backend.ib.simulator.scenario import (
    AccountValueSpec,
    CommissionSpec,
    ContractSpec,
    ExecutionSpec,
    OrderSpec,
    PositionSpec,
    QuoteSpec,
    Scenario,
)
from backend.ib.simulator.server import GatewaySimulator
from backend.ib.simulator.thread import SimulatorThread

__all__ = [
    "SERVER_VERSION",
    "AccountValueSpec",
    "CommissionSpec",
    "ContractSpec",
    "Exchange",
    "ExecCorrection",
    "ExecutionSpec",
    "Faults",
    "GatewaySimulator",
    "OrderSpec",
    "PositionSpec",
    "QuoteSpec",
    "Scenario",
    "SimulatorThread",
    "corrected_exec_id",
]
