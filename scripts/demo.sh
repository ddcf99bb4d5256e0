#!/usr/bin/env bash
# Demo: an emulated TeamViewer IoT Agent and a simulated greenhouse (no hardware needed).
# Sets the machine up first if needed. Extra arguments go to scripts/demo.py (e.g. --rounds 5).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
