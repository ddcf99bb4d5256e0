#!/usr/bin/env bash
# The whole test suite against the real emulator (mosquitto, TLS) and fake hardware.
# Sets the machine up first if needed. Extra arguments go to pytest. Usage: bash scripts/test.sh
# The tests mostly wait (on the emulator, on subprocesses, on outages they stage), so they run in
# PIBRIDGE_TEST_WORKERS processes (default 4, pytest-xdist), more than a small machine has cores;
# `-n 0` runs them in this process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -n "${PIBRIDGE_TEST_WORKERS:-4}" "$@"
