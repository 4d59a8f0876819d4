#!/usr/bin/env bash
# Install what is missing, then start the VED monitor (arguments go to main.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python main.py "$@"
