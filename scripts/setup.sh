#!/usr/bin/env bash
# Prepare this checkout on a Debian / Raspberry Pi OS machine: mosquitto (the emulator's broker)
# from Debian's packages when missing, a virtualenv in .venv, and pibridge with its test extras.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh [--browser]
# --browser: also Debian's chromium and chromium-driver (the browser tests of the web pages; CI and
# development machines only, never needed on a Pi).
#
# Two routes (README.md, "Running on a Pi"):
# - 64-bit userland (x86_64 PCs, aarch64 Pis): a plain venv, everything from pip (all wheels).
# - 32-bit ARM userland (armv6l: Pi Zero W / Pi 1; armv7l; or 32-bit Pi OS on a 64-bit kernel):
#   PyPI has no cryptography/cffi wheel for armv6l and no cffi wheel for armv7l, so those (and lgpio
#   on a Pi) come from apt and the venv sees them (--system-site-packages); pip installs the rest
#   from wheels only (--only-binary): nothing is compiled, a missing wheel fails at once.
set -euo pipefail
cd "$(dirname "$0")/.."

want_browser=false
for argument in "$@"; do
    case "$argument" in
        --browser) want_browser=true ;;
        *) echo "setup: unknown option $argument (usage: bash scripts/setup.sh [--browser])" >&2; exit 2 ;;
    esac
done

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

is_pi=false
grep -qs "Raspberry Pi" /proc/device-tree/model && is_pi=true
# 32-bit ARM userland: uname -m says armv6l/armv7l, or aarch64 under a 64-bit kernel with a 32-bit
# Pi OS (the default kernel on a Pi 4/5), which only the interpreter's pointer size tells apart.
route=pip
case "$(uname -m)" in
    armv6l|armv7l) route=apt32 ;;
    aarch64|armv8l) python3 -c 'import struct, sys; sys.exit(struct.calcsize("P") != 4)' 2>/dev/null \
                        && route=apt32 ;;
esac
apt_python=()
if [ "$route" = apt32 ]; then
    apt_python=(python3-cryptography python3-cffi)
    $is_pi && apt_python+=(python3-lgpio)  # Raspberry Pi OS's own package
fi

need_apt=()
for package in "${apt_python[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || need_apt+=("$package")
done
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
if $want_browser; then
    [ -x /usr/bin/chromium ] || need_apt+=(chromium)
    [ -x /usr/bin/chromedriver ] || need_apt+=(chromium-driver)
fi
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

venv_options=()
[ "$route" = apt32 ] && venv_options=(--system-site-packages)
wants_system=false; [ "$route" = apt32 ] && wants_system=true
has_system=false
grep -qs "^include-system-site-packages = true" .venv/pyvenv.cfg && has_system=true
# a venv whose creation was interrupted has an interpreter but no pip, and a venv of the other route
# sees the wrong packages: make it anew
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1 \
        || [ "$has_system" != "$wants_system" ]; then
    echo "setup: creating .venv${venv_options[*]:+ (${venv_options[*]})}"
    rm -rf .venv
    python3 -m venv "${venv_options[@]}" .venv
fi
extras=test
if $is_pi; then
    extras=test,pi  # lgpio: gpiozero's pin factory for every Pi model, the Pi 5 included
fi
if [ "$route" = pip ]; then
    # the DHT library (Blinka) installs from wheels only on 64-bit systems; so do Adafruit's chip
    # drivers the tests cross-check pibridge's against (tests/test_crosscheck.py)
    extras=$extras,dht,crosscheck
fi
pip_options=()
[ "$route" = apt32 ] && pip_options=(--only-binary=:all: --constraint scripts/pi32-constraints.txt)
stamp=.venv/.pibridge-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/pi32-constraints.txt -nt "$stamp" ] \
        || [ "$(cat "$stamp")" != "$route $extras" ]; then
    echo "setup: installing pibridge[$extras] into .venv"
    .venv/bin/python -m pip install -q --upgrade "${pip_options[@]}" pip
    if ! .venv/bin/python -m pip install -q "${pip_options[@]}" -e ".[$extras]"; then
        [ "$route" = apt32 ] && echo "setup: a dependency has no wheel for this 32-bit system;" \
            "pibridge installs without a compiler only if it does (README.md, Running on a Pi)" >&2
        exit 1
    fi
    echo "$route $extras" > "$stamp"
fi
if [ "$route" = apt32 ] && ! .venv/bin/python -c 'import adafruit_dht' >/dev/null 2>&1; then
    echo "setup: DHT support not installed (Blinka's sysv_ipc has no 32-bit wheel on PyPI); for DHT" \
         "sensors: sudo apt install python3-libgpiod && .venv/bin/pip install --prefer-binary -e '.[$extras,dht]'"
fi
