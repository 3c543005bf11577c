"""ArcticDB-backed portfolio ledger for strategies trading through Interactive Brokers."""

__version__ = "0.1.0"
