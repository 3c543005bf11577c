"""Smoke tests of bench/reconcile.py and bench/ingest.py: each runs end to end with tiny
parameters and ends with the JSON line the docs quote (the figures are noise here; what is
checked is that they exist, are finite and agree with the inputs)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def bench(script: str, *args: str) -> tuple[list[str], dict[str, Any]]:
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()  # the human-readable lines may go to stderr
    result = json.loads(lines[-1])
    assert isinstance(result, dict)
    for key, value in result.items():
        assert isinstance(value, int | float), key
        assert math.isfinite(value) and value >= 0, (key, value)
    return lines[:-1] + done.stderr.splitlines(), result


def test_reconcile_bench() -> None:
    text, result = bench("reconcile.py", "--positions", "200", "--strategies", "5",
                         "--repeat", "1")
    assert result["broker_positions"] == 200
    assert result["strategies"] == 5
    assert result["reconcile_s"] > 0
    assert result["breaks"] > 0  # the generated books disagree on purpose
    assert any(line.startswith("reconcile: ") for line in text)


def test_ingest_bench() -> None:
    text, result = bench("ingest.py", "--fills", "1000", "--naive", "20", "--seconds", "0.5",
                         "--repeat", "2")
    assert result["fills"] == 1000
    for key in ("fills_per_s", "naive_fills_per_s", "raw_rows_per_s", "p99_ms", "loop_lag_ms",
                "vs_naive", "vs_raw", "front_fills_per_s", "front_vs_raw"):
        assert result[key] > 0, key
    assert result["p50_ms"] <= result["p99_ms"]
    assert any(line.startswith("ratios: ") for line in text)
    # the collections of the latency phase are counted, so a tail can be told from a GC pause
    assert "gc_max_ms" in result
    assert any(line.startswith("garbage collections during that phase: ") for line in text)
    # the throughput, the raw ceiling and the front half are medians of the runs, each printed
    for prefix in ("microbatched: ", "raw append ceiling: ",
                   "front half (ArcticDB writes dropped): "):
        line = next(x for x in text if x.startswith(prefix))
        runs = line.split("median of ")[1].rstrip(")").split(", ")  # "12,345, 13,001"
        assert len(runs) == 2, line


def test_ingest_bench_recovery() -> None:
    text, result = bench("ingest.py", "--recovery-fills", "1000")
    assert result["fills"] == 1000
    assert result["recovery_s"] > 0
    assert result["full_refold_s_per_million"] > 0
    assert any("from positions rows" in line for line in text)


def test_ingest_bench_latency_on_a_stored_root() -> None:
    text, result = bench("ingest.py", "--latency-stored", "2000", "--seconds", "0.5")
    assert result["stored_fills"] == 2000
    assert 0 < result["p50_ms"] <= result["p99_ms"]
    assert "gc_max_ms" in result
    assert any(line.startswith("with 2,000 fills stored") for line in text)


def test_ingest_bench_unseal_of_a_restored_key() -> None:
    text, result = bench("ingest.py", "--unseal", "1000")
    assert result["unseal_fills"] == 1000
    assert result["read_ms"] > 0 and result["install_ms"] > 0 and result["on_loop_ms"] > 0
    assert math.isclose(result["vs_on_loop"], result["on_loop_ms"] / result["loop_lag_ms"],
                        rel_tol=0.05)  # the ratio of the unrounded figures
    assert any(line.startswith("a restored key of 1,000 fills") for line in text)
    # its fills with a commission, sealed again by the sweep: every other one, and the one
    # whose (changed) report made the manager read the key
    assert result["resealed"] == 501


def test_ingest_bench_gc_session() -> None:
    text, result = bench("ingest.py", "--gc-session", "2000")
    assert result["session_fills"] == 2000
    # 2,000 fills over 100 positions: below SEAL_BUSY, nothing to seal; the figures exist
    assert result["gc_ms_seal_off"] > 0 and result["gc_ms_seal_on"] > 0
    assert result["tracked_seal_off"] > 0 and result["tracked_seal_on"] > 0
    assert math.isclose(result["vs_no_seal"],
                        result["gc_ms_seal_off"] / result["gc_ms_seal_on"], rel_tol=0.05)
    assert any(line.startswith("full collection with sealing") for line in text)


def test_ingest_bench_redelivery_after_a_restart() -> None:
    text, result = bench("ingest.py", "--redeliver", "2000")
    assert result["redeliver_fills"] == 2000
    # every copy recognised from the prints; with them ignored, every key is read
    assert result["keys_read"] == 0 and result["ignored_keys_read"] == 100
    assert result["redeliver_s"] > 0 and result["ignored_s"] > 0
    assert any(line.startswith("re-delivery of 2,000 stored fills") for line in text)
