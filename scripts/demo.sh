#!/usr/bin/env bash
# Quick start: set up, train task 1 on the embedded synthetic data, export all seven graphs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python cli.py train task1 "$@"
.venv/bin/python cli.py export --channels all
