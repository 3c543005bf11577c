"""The domain: value objects, position maths, the ledger and reconciliation. No I/O here.

Nothing in this package imports ib_async, ArcticDB or the HTTP routes, except
:mod:`backend.core.portfolio_manager`, the orchestrator users embed.
"""
