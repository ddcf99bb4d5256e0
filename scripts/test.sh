#!/usr/bin/env bash
# The whole test suite against the real emulator (mosquitto, TLS) and fake hardware.
# Sets the machine up first if needed. Extra arguments go to pytest. Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
