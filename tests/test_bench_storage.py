"""Smoke test of bench/storage.py: it runs end to end with tiny parameters and its last line is
the JSON object the docs promise (the figures themselves are noise on a shared machine)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = {
    "batched_rows_per_s",
    "single_row_rows_per_s",
    "batched_vs_single",
    "live_batches",
    "read_ms_fragmented",
    "read_ms_compacted",
    "read_speedup_after_compaction",
    "read_ms_inline_compaction",
    "append_latency_growth_no_compaction",
    "append_latency_growth_inline_compaction",
}


def test_storage_bench_runs_and_ends_with_its_json_line() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "storage.py"), "--live-batches", "20",
         "--symbols", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) > 1  # the human-readable lines come first
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    assert set(result) == KEYS
    assert result["live_batches"] == 20
    for key, value in result.items():
        assert isinstance(value, int | float), key
        assert math.isfinite(value) and value > 0, (key, value)
    assert "batched path (2 symbols x 50 rows per commit)" in done.stdout
