#!/usr/bin/env bash
# The test suite on the oldest versions pibridge accepts: every runtime dependency pinned to the
# floor pyproject.toml declares (scripts/floor_constraints.py), in its own virtualenv .venv-floors.
# Those floors are what Debian bookworm's packages meet on the 32-bit Pi route (cryptography
# 38.0.4, cffi 1.15.1); this run keeps them true. The test tools are not pinned, nor are the
# cross-check's reference libraries (the crosscheck extra: CI=true fails its tests where it is missing).
# Extra arguments go to pytest. Usage: bash scripts/test_floors.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh  # mosquitto, and .venv whose Python reads pyproject.toml below

venv=.venv-floors
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "test_floors: creating $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
fi
.venv/bin/python scripts/floor_constraints.py > "$venv/floors.txt"
stamp=$venv/.pibridge-installed
if [ ! -f "$stamp" ] || ! cmp -s "$venv/floors.txt" "$stamp" || [ pyproject.toml -nt "$stamp" ]; then
    echo "test_floors: installing pibridge[test,dht,crosscheck] with $(paste -sd' ' "$venv/floors.txt")"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q -c "$venv/floors.txt" -e ".[test,dht,crosscheck]"
    cp "$venv/floors.txt" "$stamp"
fi
"$venv/bin/python" -m pip check
# The type check is left out here: it checks our code against the newest libraries' type hints
# (the main run does it); the floors are about what runs.
exec "$venv/bin/python" -m pytest -p no:cacheprovider -n "${PIBRIDGE_TEST_WORKERS:-4}" \
    --deselect tests/test_types.py::test_mypy_finds_no_error "$@"
