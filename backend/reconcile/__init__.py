"""Reconciliation runs against IB (I/O): the scheduled job and the runner's periodic task.

The maths is pure and lives in :mod:`backend.core.reconcile`; this package reads the broker and
storage, runs it, and persists the outcome (:mod:`backend.reconcile.job`).
"""
