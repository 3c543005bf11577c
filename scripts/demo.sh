#!/usr/bin/env bash
# Set up (if needed) and run the demo: simulated IB Gateway, toy strategies, ledger on LMDB.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/portfolio demo "$@"
