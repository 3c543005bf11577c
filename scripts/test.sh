#!/usr/bin/env bash
# Set up (if needed) and run every check: ruff, mypy --strict, the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check backend tests bench
.venv/bin/mypy
.venv/bin/pytest "$@"
