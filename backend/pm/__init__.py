"""Internals of the PortfolioManager (:mod:`backend.core.portfolio_manager`).

* :mod:`backend.pm.state`: the books (ledger + indexes) and the dirty sets of a batch;
* :mod:`backend.pm.rows`: rows as column lists, frames per batch, stored rows -> fills;
* :mod:`backend.pm.persist`: one ``Store.commit`` per batch (worker thread);
* :mod:`backend.pm.recovery`: rebuild from ArcticDB and replay of the journal tail.
"""
