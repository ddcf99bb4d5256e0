#!/usr/bin/env bash
# Prepare this checkout on a Debian / Raspberry Pi OS machine: mosquitto (the emulator's broker)
# from Debian's packages when missing, a virtualenv in .venv, and pibridge with its test extras.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup: installing ${need_apt[*]} from Debian's packages"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "setup: pibridge needs Python 3.11 or newer; python3 is $(python3 -V 2>&1)" \
         "(Raspberry Pi OS bookworm or Debian 12 have it)" >&2
    exit 1
fi

# a venv whose creation was interrupted has an interpreter but no pip: make it anew
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    echo "setup: creating .venv"
    rm -rf .venv
    python3 -m venv .venv
fi
extras=test
if grep -qs "Raspberry Pi" /proc/device-tree/model; then
    extras=test,pi  # lgpio: gpiozero's pin factory for every Pi model, the Pi 5 included
fi
stamp=.venv/.pibridge-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$(cat "$stamp")" != "$extras" ]; then
    echo "setup: installing pibridge[$extras] into .venv"
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e ".[$extras]"
    echo "$extras" > "$stamp"
fi
