#!/usr/bin/env bash
# Demo: `pibridge run` on a simulated greenhouse, delivering to an emulated TeamViewer IoT Agent
# (no hardware needed). Sets the machine up first if needed (scripts/setup.sh), then runs
# scripts/demo.py: the emulator on profiles/demo.toml's ports, the bridge for 30 s (or until
# Ctrl-C) with its live view, then what the agent holds. Extra arguments go to scripts/demo.py
# (e.g. --seconds 120).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python scripts/demo.py "$@"
