"""HTTP read API (not built yet)."""
