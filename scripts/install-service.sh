#!/usr/bin/env bash
# Install pibridge as a systemd service on a Raspberry Pi (Raspberry Pi OS Bookworm), from this
# checkout. Idempotent: run it again after `git pull` to update; it changes only what differs and
# never overwrites your profile. Usage (as root):
#
#   sudo bash scripts/install-service.sh [--no-start]
#
# What it does, each step skipped when already done:
#   1. groups gpio, i2c, spi (Pi OS has them) and the system user `pibridge` in them
#   2. a virtualenv in /opt/pibridge/venv with pibridge from this checkout (the `pi` extra on a
#      Pi, and `dht` on a 64-bit one: the profile has a DHT22); not editable: the service must not depend on a checkout under /home (ProtectHome=)
#   3. /etc/pibridge/greenhouse.toml from profiles/greenhouse.toml if there is none
#   4. read access for `pibridge` to the agent's CA (an ACL on the file, a default ACL on its
#      folder so a CA the agent re-creates stays readable; search access on the folders above)
#   5. the udev rule for 1-Wire bulk conversion (/etc/udev/rules.d/99-pibridge-w1.rules)
#   6. the unit (/etc/systemd/system/pibridge.service), then `systemctl enable --now pibridge`
#      (a restart when it runs and something changed) — skipped, with a message, when systemd is not
#      running (a container, a chroot, a CI machine)
#
# The paths below are the ones scripts/pibridge.service names; change both together.
# PYTHON=/path/to/python3 picks the interpreter the venv is built on (default: python3 on PATH,
# /usr/bin/python3 on Pi OS); the service user must be able to run it (not one under /root).
set -euo pipefail

SOURCE=$(cd "$(dirname "$0")/.." && pwd)
SERVICE_USER=pibridge
DEVICE_GROUPS=(gpio i2c spi dialout)  # dialout: serial ports (/dev/serial0, /dev/ttyUSB*)
PREFIX=/opt/pibridge
VENV=$PREFIX/venv
ETC_DIR=/etc/pibridge
PROFILE=$ETC_DIR/greenhouse.toml
UNIT_DIR=/etc/systemd/system
RULES_DIR=/etc/udev/rules.d
STATE_DIR=/var/lib/pibridge
PYTHON=${PYTHON:-python3}
start=yes
changed=no     # the installed code or unit changed: a running service is restarted

for arg in "$@"; do
    case $arg in
        --no-start) start=no ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-service: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

say() { echo "install-service: $*"; }
if [ "$(id -u)" -ne 0 ]; then
    echo "install-service: run as root: sudo bash $0 $*" >&2
    exit 1
fi

# --- 1. groups and user ------------------------------------------------------------------------
for group in "${DEVICE_GROUPS[@]}"; do
    if ! getent group "$group" >/dev/null; then
        say "creating group $group (not a Raspberry Pi OS image?)"
        groupadd --system "$group"
    fi
done
if ! getent passwd "$SERVICE_USER" >/dev/null; then
    say "creating system user $SERVICE_USER"
    useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "pibridge sensor bridge" "$SERVICE_USER"
fi
missing=()
for group in "${DEVICE_GROUPS[@]}"; do
    id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx "$group" || missing+=("$group")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "adding $SERVICE_USER to ${missing[*]}"
    usermod -a -G "$(IFS=,; echo "${missing[*]}")" "$SERVICE_USER"
fi

# --- 2. the virtualenv -------------------------------------------------------------------------
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    say "installing python3-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
as_service() { runuser -u "$SERVICE_USER" -- "$@"; }
if ! PYTHON=$(command -v "$PYTHON"); then
    echo "install-service: no python3 found (sudo apt install python3)" >&2
    exit 1
fi
if ! as_service "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "install-service: $SERVICE_USER cannot run $PYTHON as Python >= 3.11 (an interpreter under" \
         "/root or /home?); run with PYTHON=/usr/bin/python3" >&2
    exit 1
fi
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1 \
        || ! as_service "$VENV/bin/python" -c pass 2>/dev/null; then
    say "creating $VENV (with $PYTHON)"
    rm -rf "$VENV"
    mkdir -p "$PREFIX"
    "$PYTHON" -m venv "$VENV"
fi
if ! as_service "$VENV/bin/python" -c pass 2>/dev/null; then
    echo "install-service: $SERVICE_USER cannot run $VENV/bin/python (built on $PYTHON)" >&2
    exit 1
fi
extras=""
if grep -qs "Raspberry Pi" /proc/device-tree/model; then
    extras="[pi]"    # lgpio: gpiozero's pin factory on every Pi, the Pi 5 included
    # the profile installed below has a DHT22: its library installs from wheels on a 64-bit userland
    if "$VENV/bin/python" -c 'import struct, sys; sys.exit(struct.calcsize("P") != 8)'; then
        extras="[pi,dht]"
    else
        say "DHT support not installed (32-bit: Blinka's sysv_ipc has no PyPI wheel); for DHT sensors:" \
            "sudo apt install python3-libgpiod && sudo $VENV/bin/pip install --prefer-binary '${SOURCE}[pi,dht]'"
    fi
fi
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$SOURCE/pibridge/__init__.py")
stamp="$VENV/.pibridge-source"
want="$version $extras $(cd "$SOURCE" && git rev-parse HEAD 2>/dev/null || echo unknown) \
$(cd "$SOURCE" && git status --porcelain 2>/dev/null | sha256sum | cut -c1-12)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing pibridge $version$extras from $SOURCE into $VENV"
    # build from a copy: a build writes pibridge.egg-info, which root must not leave in your checkout
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    tar -C "$SOURCE" --exclude=./.venv --exclude=./.git --exclude='*.egg-info' --exclude=__pycache__ \
        -cf - . | tar -C "$build" -xf -
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q "$build$extras"                      # dependencies
    "$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$build"  # this version, always
    echo "$want" > "$stamp"
    changed=yes
fi
mkdir -p "$PREFIX/docs"
install -m 0644 "$SOURCE/README.md" "$PREFIX/docs/README.md"   # its "Operating pibridge on a Pi"

# --- 3. the profile ----------------------------------------------------------------------------
install -d -m 0750 -o root -g "$SERVICE_USER" "$ETC_DIR"
if [ ! -e "$PROFILE" ]; then
    say "installing the example profile as $PROFILE (edit it: sensors, pins, the agent)"
    install -m 0640 -o root -g "$SERVICE_USER" "$SOURCE/profiles/greenhouse.toml" "$PROFILE"
else
    say "keeping your profile $PROFILE"
fi

# --- 4. the agent's CA -------------------------------------------------------------------------
ca_file=$("$VENV/bin/python" - "$PROFILE" <<'PY' 2>/dev/null || true
import sys
from pibridge.profile import load_profile
print(load_profile(sys.argv[1]).agent.ca_file)
PY
)
if [ -z "$ca_file" ]; then
    say "WARNING: $PROFILE does not load; fix it (pibridge check --profile $PROFILE), then run this again"
elif [ ! -e "$ca_file" ]; then
    say "the agent's CA $ca_file is not there (TeamViewer IoT Agent not installed yet?):" \
        "run this again after installing the agent"
else
    if ! command -v setfacl >/dev/null; then
        say "installing acl (setfacl)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq acl >/dev/null
    fi
    ca_dir=$(dirname "$ca_file")
    setfacl -m "u:$SERVICE_USER:r" "$ca_file"
    setfacl -d -m "u:$SERVICE_USER:r" "$ca_dir"       # a re-created CA file inherits it
    dir=$ca_dir
    while [ "$dir" != "/" ]; do                       # search (x) on each folder down to it
        if ! as_service test -x "$dir"; then
            setfacl -m "u:$SERVICE_USER:x" "$dir"
        fi
        dir=$(dirname "$dir")
    done
    if as_service test -r "$ca_file"; then
        say "$SERVICE_USER can read the agent's CA $ca_file"
    else
        say "WARNING: $SERVICE_USER still cannot read $ca_file (a file system without ACLs?)"
    fi
fi

# --- 5. udev rule ------------------------------------------------------------------------------
mkdir -p "$RULES_DIR"
if ! cmp -s "$SOURCE/scripts/99-pibridge-w1.rules" "$RULES_DIR/99-pibridge-w1.rules"; then
    say "installing $RULES_DIR/99-pibridge-w1.rules"
    install -m 0644 "$SOURCE/scripts/99-pibridge-w1.rules" "$RULES_DIR/99-pibridge-w1.rules"
    if command -v udevadm >/dev/null && [ -d /run/udev ]; then
        udevadm control --reload
        udevadm trigger --subsystem-match=w1 --action=add    # probes already attached
    fi
fi

# --- 6. the unit -------------------------------------------------------------------------------
mkdir -p "$UNIT_DIR"
unit_changed=no
if ! cmp -s "$SOURCE/scripts/pibridge.service" "$UNIT_DIR/pibridge.service"; then
    say "installing $UNIT_DIR/pibridge.service"
    install -m 0644 "$SOURCE/scripts/pibridge.service" "$UNIT_DIR/pibridge.service"
    unit_changed=yes
    changed=yes
fi
if [ ! -d /run/systemd/system ]; then
    say "systemd is not running here (PID 1 is $(ps -p 1 -o comm= 2>/dev/null || echo unknown)):" \
        "installed, not started. On the Pi: sudo systemctl enable --now pibridge"
    exit 0
fi
[ "$unit_changed" = yes ] && systemctl daemon-reload
if [ "$start" = no ]; then
    systemctl enable pibridge
    say "enabled, not started (--no-start): sudo systemctl start pibridge"
elif systemctl is-active --quiet pibridge; then
    systemctl enable pibridge
    if [ "$changed" = yes ]; then
        systemctl restart pibridge
        say "restarted pibridge: it runs what was just installed"
    else
        say "pibridge runs and nothing changed"
    fi
else
    systemctl enable --now pibridge
    say "started: systemctl status pibridge; pibridge status; journalctl -u pibridge -f"
fi
