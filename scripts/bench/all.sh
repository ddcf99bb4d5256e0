#!/usr/bin/env bash
# The issue-17 target table in one command: pibridge beside mqtt-io in one run, storage writes,
# idle cost, peak RSS, backlog drain and scheduler jitter (scripts/bench/side_by_side.py says how
# each is measured).
#
#   bash scripts/bench/all.sh            # ~6 minutes: a 60 s window, 100,000-sample drain, 60 s jitter
#   bash scripts/bench/all.sh --quick    # ~2 minutes: a 20 s window, small drain, 20 s jitter
#
# mqtt-io, the peer, is installed from PyPI into a throwaway venv outside the repository
# ($MQTTIO_VENV, default /tmp/pibridge-bench-mqttio; made on first use, reused after). Its code is
# never part of pibridge. Needs mosquitto on the PATH (as the emulator does).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON="${PYTHON:-$ROOT/.venv/bin/python}"
MQTTIO_VENV="${MQTTIO_VENV:-/tmp/pibridge-bench-mqttio}"
if [[ ! -x "$PYTHON" ]]; then
    echo "all.sh: no $PYTHON (run scripts/setup.sh first)" >&2
    exit 1
fi
if ! "$MQTTIO_VENV/bin/python" -c "import mqtt_io" 2>/dev/null; then
    echo "all.sh: installing mqtt-io into $MQTTIO_VENV (throwaway venv)" >&2
    python3 -m venv "$MQTTIO_VENV"
    "$MQTTIO_VENV/bin/pip" install -q mqtt-io >&2
fi
exec "$PYTHON" "$ROOT/scripts/bench/side_by_side.py" --mqttio-python "$MQTTIO_VENV/bin/python" "$@"
