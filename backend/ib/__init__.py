"""Broker boundary: ib_async translation, the IB Gateway simulator, the StrategyManager."""
