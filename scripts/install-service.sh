#!/usr/bin/env bash
# Install pibridge as a systemd service on a Raspberry Pi (Raspberry Pi OS Bookworm), from this
# checkout, with YOUR profile. Usage (as root):
#
#   sudo bash scripts/install-service.sh --profile my-greenhouse.toml [--no-start]
#   sudo bash scripts/install-service.sh                  # again later (after `git pull`): update
#   sudo bash scripts/install-service.sh --uninstall [--purge]
#
# Before it creates anything it checks every prerequisite and stops, changing nothing, at the
# first one missing: root; systemd running as PID 1; a Python >= 3.11 with venv that an
# unprivileged user can run; setfacl; the profile (given, or installed by an earlier run; never
# the unedited example); the agent's CA file the profile names (the TeamViewer IoT Agent must be
# installed first); the profile's paths as the service will read them (absolute, no `~`: the
# profile is copied to /etc/pibridge and read by the user pibridge; state_dir and cert_folder
# under /var/lib/pibridge, the one place the unit lets it write). Then it builds the code in a
# staging virtualenv and runs its `pibridge check` on the profile: any problem is printed and the
# install stops, removing the staging copy (an update leaves the installed code, and the running
# service, as they were). Only then:
#   1. groups gpio, i2c, spi, dialout (Pi OS has them) and the system user `pibridge` in them
#   2. a virtualenv with pibridge from this checkout (the `pi` extra on a Pi, and `dht` on a
#      64-bit one), swapped in as /opt/pibridge/venv (a link to /opt/pibridge/venv-XXXXXX); not
#      editable: the service must not depend on a checkout under /home (ProtectHome=);
#      `pibridge` on the PATH: /usr/local/bin/pibridge → the venv's
#   3. the profile as /etc/pibridge/greenhouse.toml (root:pibridge 0640)
#   4. read access for `pibridge` to the agent's CA (an ACL on the file, a default ACL on its
#      folder so a CA the agent re-creates stays readable; search access on the folders above)
#   5. the udev rule for 1-Wire bulk conversion (/etc/udev/rules.d/99-pibridge-w1.rules)
#   6. the unit (/etc/systemd/system/pibridge.service), then `systemctl enable --now pibridge`
#      (a restart when it runs and something changed)
# Idempotent: a second run changes only what differs and says so. It ends with the list of what
# it created. --uninstall stops and removes the service, the code, the link and the udev rule and
# keeps the queue, the client certificate, the profile and the user (samples not yet delivered
# wait there for a reinstall); --uninstall --purge removes those too.
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
MANIFEST=$ETC_DIR/created-by-install   # what this script created (groups, user, CA access): for uninstall
PROFILE=$ETC_DIR/greenhouse.toml
UNIT_DIR=/etc/systemd/system
RULES_DIR=/etc/udev/rules.d
STATE_DIR=/var/lib/pibridge
PATH_LINK=/usr/local/bin/pibridge
EXAMPLE=$SOURCE/profiles/greenhouse.toml
PYTHON=${PYTHON:-python3}
start=yes
uninstall=no
purge=no
given_profile=""

usage() { sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
        --profile) [ $# -ge 2 ] || { echo "install-service: --profile needs a file" >&2; exit 2; }
                   given_profile=$2; shift ;;
        --profile=*) given_profile=${1#--profile=} ;;
        --no-start) start=no ;;
        --uninstall) uninstall=yes ;;
        --purge) purge=yes ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install-service: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

say() { echo "install-service: $*"; }
refuse() { echo "install-service: $* — nothing was changed" >&2; exit 1; }
created=()                        # what this run created or changed, said at the end
note() { created+=("$*"); say "$*"; }

if [ "$(id -u)" -ne 0 ]; then
    echo "install-service: run as root: sudo bash $0 $*" >&2
    exit 1
fi
if [ "$purge" = yes ] && [ "$uninstall" = no ]; then
    echo "install-service: --purge goes with --uninstall" >&2
    exit 2
fi
systemd_runs() { [ -d /run/systemd/system ]; }   # sd_booted(): systemd is PID 1

# ================================================================================================
# uninstall
# ================================================================================================
if [ "$uninstall" = yes ]; then
    removed=()
    if systemd_runs && [ -e "$UNIT_DIR/pibridge.service" ]; then
        systemctl disable --now pibridge >/dev/null 2>&1 || true
        removed+=("the pibridge service (stopped, disabled)")
    fi
    if [ -e "$UNIT_DIR/pibridge.service" ]; then
        rm -f "$UNIT_DIR/pibridge.service"
        systemd_runs && systemctl daemon-reload
        removed+=("$UNIT_DIR/pibridge.service")
    fi
    if [ -e "$RULES_DIR/99-pibridge-w1.rules" ]; then
        rm -f "$RULES_DIR/99-pibridge-w1.rules"
        removed+=("$RULES_DIR/99-pibridge-w1.rules")
    fi
    if [ -L "$PATH_LINK" ] && [ "$(readlink "$PATH_LINK")" = "$VENV/bin/pibridge" ]; then
        rm -f "$PATH_LINK"
        removed+=("$PATH_LINK")
    fi
    made_groups=(); made_user=no
    if [ -f "$MANIFEST" ]; then
        while read -r kind name; do
            case $kind in
                group) made_groups+=("$name") ;;
                user) made_user=yes ;;
                ca) if command -v setfacl >/dev/null && [ -e "$name" ]; then
                        setfacl -x "u:$SERVICE_USER" "$name" 2>/dev/null || true
                        setfacl -d -x "u:$SERVICE_USER" "$(dirname "$name")" 2>/dev/null || true
                        removed+=("$SERVICE_USER's read access to $name")
                    fi ;;
                search) if command -v setfacl >/dev/null && [ -d "$name" ]; then
                            setfacl -x "u:$SERVICE_USER" "$name" 2>/dev/null || true
                            removed+=("$SERVICE_USER's search access to $name")
                        fi ;;
            esac
        done < "$MANIFEST"
    fi
    if [ -d "$PREFIX" ]; then
        rm -rf "$PREFIX"
        removed+=("$PREFIX (the virtualenv)")
    fi
    kept=()
    if [ "$purge" = yes ]; then
        for path in "$STATE_DIR" "$ETC_DIR"; do
            if [ -e "$path" ]; then rm -rf "$path"; removed+=("$path"); fi
        done
        if [ "$made_user" = yes ] && getent passwd "$SERVICE_USER" >/dev/null; then
            userdel "$SERVICE_USER" >/dev/null 2>&1 && removed+=("user $SERVICE_USER")
        fi
        for group in ${made_groups[@]+"${made_groups[@]}"}; do
            getent group "$group" >/dev/null && groupdel "$group" >/dev/null 2>&1 && removed+=("group $group")
        done
    else
        [ -e "$STATE_DIR" ] && kept+=("$STATE_DIR (the queue of samples not yet delivered, the client certificate)")
        [ -e "$ETC_DIR" ] && kept+=("$ETC_DIR (your profile)")
        getent passwd "$SERVICE_USER" >/dev/null && kept+=("user $SERVICE_USER")
    fi
    if [ ${#removed[@]} -eq 0 ]; then
        say "pibridge is not installed: nothing to remove"
    else
        say "removed:"; printf '  %s\n' "${removed[@]}"
    fi
    if [ ${#kept[@]} -gt 0 ]; then
        say "kept (--uninstall --purge removes them):"; printf '  %s\n' "${kept[@]}"
    fi
    exit 0
fi

# ================================================================================================
# prerequisites: all of them before anything is created
# ================================================================================================
systemd_runs || refuse "systemd is not running as PID 1 here (PID 1 is $(ps -p 1 -o comm= 2>/dev/null \
    || echo unknown)): the service needs it. On a Raspberry Pi OS it is; in a container or chroot run" \
    "pibridge by hand instead (pibridge run --profile …)"
if ! PYTHON=$(command -v "$PYTHON"); then
    refuse "no python3 found (sudo apt install python3)"
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || refuse "$PYTHON is $("$PYTHON" -V 2>&1); pibridge needs Python 3.11 or newer (Raspberry Pi OS bookworm)"
"$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1 \
    || refuse "$PYTHON cannot make a virtualenv: sudo apt install python3-venv"
runuser -u nobody -- "$PYTHON" -c pass 2>/dev/null \
    || refuse "an unprivileged user cannot run $PYTHON (an interpreter under /root or /home?);" \
              "run with PYTHON=/usr/bin/python3"
command -v setfacl >/dev/null || refuse "setfacl is missing (it lets the service read the agent's CA):" \
                                        "sudo apt install acl"
if [ -n "$given_profile" ]; then
    [ -f "$given_profile" ] && [ -r "$given_profile" ] || refuse "no readable profile $given_profile"
    source_profile=$(cd "$(dirname "$given_profile")" && pwd)/$(basename "$given_profile")
elif [ -e "$PROFILE" ]; then
    source_profile=$PROFILE            # an update: the installed profile stays
else
    refuse "which profile? sudo bash $0 --profile my-greenhouse.toml (start from" \
           "\`pibridge profile example -o my-greenhouse.toml\`, edit it, \`pibridge check\` it)"
fi
if cmp -s "$source_profile" "$EXAMPLE"; then
    refuse "$source_profile is the unedited example profile: edit it for this Pi first (addresses, pins," \
           "probe ids, the agent), then \`pibridge check --profile $source_profile\`"
fi
# The profile's paths as the service reads them: the profile is copied to /etc/pibridge and read
# by the user pibridge under the unit's sandbox, so a relative path or a `~` would name something
# else there than in `pibridge check` here; and the unit lets the service write only in
# /var/lib/pibridge (ProtectSystem=strict, StateDirectory=pibridge). One line per problem, before
# anything is created. Prints the agent's CA (stdlib only: pibridge is not installed yet).
if ! ca_file=$("$PYTHON" - "$source_profile" "$STATE_DIR" <<'PY'
import os, sys, tomllib
path, state_root = sys.argv[1], sys.argv[2]
try:
    with open(path, "rb") as f:
        document = tomllib.load(f)
except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
    document = {}                   # pibridge check names the problem below
tables = {name: document.get(name) if isinstance(document.get(name), dict) else {}
          for name in ("agent", "bridge")}
problems = []
for table, key, writable in (("agent", "ca_file", False), ("agent", "cert_folder", True),
                             ("bridge", "state_dir", True), ("bridge", "http_token_file", False)):
    value = tables[table].get(key)
    if not isinstance(value, str) or not value:
        continue                    # the default, or a type pibridge check names
    if value.startswith("~"):
        problems.append(f"{path}: [{table}] {key} = {value!r} starts with ~: the service runs as the user "
                        "pibridge, whose ~ is another folder; write the absolute path")
    elif not os.path.isabs(value):
        problems.append(f"{path}: [{table}] {key} = {value!r} is a relative path: it would be relative to "
                        "/etc/pibridge once the profile is installed there; write the absolute path")
    elif writable and os.path.normpath(value) != state_root \
            and not os.path.normpath(value).startswith(state_root + "/"):
        problems.append(f"{path}: [{table}] {key} = {value!r} is outside {state_root}: the service may write "
                        f"only there (ProtectSystem=strict, StateDirectory=pibridge); use {state_root} "
                        "or a folder in it")
for line in problems:
    print(f"install-service: {line}", file=sys.stderr)
if problems:
    sys.exit(1)
ca = tables["agent"].get("ca_file", "/var/lib/teamviewer-iot-agent/certs/TeamViewerAuthority.crt")
print(ca if isinstance(ca, str) else "")
PY
); then
    refuse "the profile's paths must mean the same for the service (above)"
fi
if [ -n "$ca_file" ] && [ ! -e "$ca_file" ]; then
    refuse "the agent's CA $ca_file is not there: install the TeamViewer IoT Agent first (README.md," \
           "\"Running on a Pi\"), or point [agent] ca_file in the profile at it"
fi

# ================================================================================================
# the code, and the profile checked by it
# ================================================================================================
# The code is built in a staging virtualenv beside the installed one (/opt/pibridge/venv-XXXXXX)
# and checks the profile from there; only a profile that passes swaps it in (one rename of the
# link /opt/pibridge/venv). A failing check removes the staging copy: on an update the installed
# code, its stamp and the running service stay as they were.
prefix_is_new=no
[ -d "$PREFIX" ] || prefix_is_new=yes
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$SOURCE/pibridge/__init__.py")
extras=""
if grep -qs "Raspberry Pi" /proc/device-tree/model; then
    extras="[pi]"    # lgpio: gpiozero's pin factory on every Pi, the Pi 5 included
    if "$PYTHON" -c 'import struct, sys; sys.exit(struct.calcsize("P") != 8)'; then
        extras="[pi,dht]"   # DHT sensors: the library installs from wheels on a 64-bit userland
    else
        say "DHT support not installed (32-bit: Blinka's sysv_ipc has no PyPI wheel); for DHT sensors:" \
            "sudo apt install python3-libgpiod && sudo $VENV/bin/pip install --prefer-binary '${SOURCE}[pi,dht]'"
    fi
fi
STAMP_NAME=.pibridge-source
want="$version $extras $(cd "$SOURCE" && git rev-parse HEAD 2>/dev/null || echo unknown) \
$(cd "$SOURCE" && git status --porcelain 2>/dev/null | sha256sum | cut -c1-12)"
installed_ok=no
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    installed_ok=yes
fi
staging=""
old_venv=""    # the code the service ran before a swap: removed on the way out, whatever happens
cleanup() {
    [ -n "$staging" ] && rm -rf "$staging"
    [ -n "${build:-}" ] && rm -rf "$build"
    [ -n "$old_venv" ] && [ "$old_venv" != "$(readlink -f "$VENV")" ] && rm -rf "$old_venv"
    return 0
}
trap cleanup EXIT
undo_prefix() { [ "$prefix_is_new" = yes ] && rm -rf "$PREFIX"; return 0; }
changed=no     # the installed code or unit changed: a running service is restarted
if [ "$installed_ok" = no ] || [ "$(cat "$VENV/$STAMP_NAME" 2>/dev/null)" != "$want" ]; then
    mkdir -p "$PREFIX"
    chmod 0755 "$PREFIX"
    staging=$(mktemp -d "$PREFIX/venv-XXXXXX")
    chmod 0755 "$staging"
    say "installing pibridge $version$extras from $SOURCE into $staging (with $PYTHON; swapped in as" \
        "$VENV once the profile passes its check)"
    # build from a copy: a build writes pibridge.egg-info, which root must not leave in your checkout
    build=$(mktemp -d)
    tar -C "$SOURCE" --exclude=./.venv --exclude=./.git --exclude='*.egg-info' --exclude=__pycache__ \
        -cf - . | tar -C "$build" -xf -
    if ! { "$PYTHON" -m venv "$staging" \
           && "$staging/bin/python" -m pip install -q --upgrade pip \
           && "$staging/bin/python" -m pip install -q "$build$extras" \
           && "$staging/bin/python" -m pip install -q --force-reinstall --no-deps "$build"; }; then
        cleanup; staging=""; undo_prefix
        echo "install-service: installing pibridge into $PREFIX failed (above)" \
             "$([ "$installed_ok" = yes ] && echo "— the installed code was left as it was")" >&2
        exit 1
    fi
    echo "$want" > "$staging/$STAMP_NAME"   # installed only with the swap below
fi
checker=${staging:-$VENV}
if ! "$checker/bin/pibridge" check --profile "$source_profile" >/dev/null; then
    cleanup; staging=""; undo_prefix
    if [ "$installed_ok" = yes ] && [ "$checker" != "$VENV" ]; then
        echo "install-service: $source_profile has problems (above) for the code of this checkout, which" \
             "was not installed: $VENV and the running service stay as they were; fix the profile and run" \
             "this again" >&2
    elif [ "$installed_ok" = yes ]; then
        echo "install-service: $source_profile has problems (above); fix them and run this again —" \
             "nothing was changed" >&2
    else
        echo "install-service: $source_profile has problems (above); fix them and run this again —" \
             "nothing was installed" >&2
    fi
    exit 1
fi
if [ -n "$staging" ]; then
    ln -sfn "$(basename "$staging")" "$PREFIX/venv.swap"
    if [ -L "$VENV" ]; then
        old_venv=$(readlink -f "$VENV")
    elif [ -e "$VENV" ]; then                     # an install before staging: a folder, moved aside
        old_venv=$PREFIX/venv-previous
        rm -rf "$old_venv"
        mv -T "$VENV" "$old_venv"
    fi
    mv -T "$PREFIX/venv.swap" "$VENV"              # one rename: the unit's path names the new code
    staging=""
    changed=yes
    [ "$installed_ok" = yes ] && note "updated $VENV to pibridge $version$extras" \
                              || note "created $VENV (pibridge $version$extras)"
fi
mkdir -p "$PREFIX/docs"
install -m 0644 "$SOURCE/README.md" "$PREFIX/docs/README.md"   # its "Operating pibridge on a Pi"
if [ ! -L "$PATH_LINK" ] || [ "$(readlink "$PATH_LINK")" != "$VENV/bin/pibridge" ]; then
    if [ -e "$PATH_LINK" ] && [ ! -L "$PATH_LINK" ]; then
        say "WARNING: $PATH_LINK exists and is not ours: left alone (use $VENV/bin/pibridge)"
    else
        mkdir -p "$(dirname "$PATH_LINK")"
        ln -sfn "$VENV/bin/pibridge" "$PATH_LINK"
        note "linked $PATH_LINK → $VENV/bin/pibridge"
    fi
fi

# ================================================================================================
# the user, the profile, the CA, udev, the unit
# ================================================================================================
[ -d "$ETC_DIR" ] || install -d -m 0755 "$ETC_DIR"
touch "$MANIFEST"
for group in "${DEVICE_GROUPS[@]}"; do
    if ! getent group "$group" >/dev/null; then
        groupadd --system "$group"
        echo "group $group" >> "$MANIFEST"
        note "created group $group (not a Raspberry Pi OS image?)"
    fi
done
if ! getent passwd "$SERVICE_USER" >/dev/null; then
    useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
        --shell /usr/sbin/nologin --comment "pibridge sensor bridge" "$SERVICE_USER"
    echo "user $SERVICE_USER" >> "$MANIFEST"
    note "created system user $SERVICE_USER"
fi
missing=()
for group in "${DEVICE_GROUPS[@]}"; do
    id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx "$group" || missing+=("$group")
done
if [ ${#missing[@]} -gt 0 ]; then
    usermod -a -G "$(IFS=,; echo "${missing[*]}")" "$SERVICE_USER"
    note "added $SERVICE_USER to ${missing[*]}"
fi
as_service() { runuser -u "$SERVICE_USER" -- "$@"; }
as_service "$VENV/bin/python" -c pass 2>/dev/null \
    || { echo "install-service: $SERVICE_USER cannot run $VENV/bin/python (built on $PYTHON)" >&2; exit 1; }

install -d -m 0750 -o root -g "$SERVICE_USER" "$ETC_DIR"
if [ "$source_profile" != "$PROFILE" ] && ! cmp -s "$source_profile" "$PROFILE"; then
    [ -e "$PROFILE" ] && changed=yes
    install -m 0640 -o root -g "$SERVICE_USER" "$source_profile" "$PROFILE"
    note "installed $source_profile as $PROFILE"
fi

if [ -n "$ca_file" ]; then
    ca_dir=$(dirname "$ca_file")
    if ! as_service test -r "$ca_file"; then
        setfacl -m "u:$SERVICE_USER:r" "$ca_file"
        setfacl -d -m "u:$SERVICE_USER:r" "$ca_dir"       # a re-created CA file inherits it
        dir=$ca_dir
        while [ "$dir" != "/" ]; do                       # search (x) on each folder down to it
            if ! as_service test -x "$dir"; then
                setfacl -m "u:$SERVICE_USER:x" "$dir"
                grep -qxF "search $dir" "$MANIFEST" || echo "search $dir" >> "$MANIFEST"   # for uninstall
            fi
            dir=$(dirname "$dir")
        done
        grep -qxF "ca $ca_file" "$MANIFEST" || echo "ca $ca_file" >> "$MANIFEST"
        note "gave $SERVICE_USER read access to the agent's CA $ca_file (ACL)"
    fi
    as_service test -r "$ca_file" \
        || say "WARNING: $SERVICE_USER still cannot read $ca_file (a file system without ACLs?)"
fi

mkdir -p "$RULES_DIR"
if ! cmp -s "$SOURCE/scripts/99-pibridge-w1.rules" "$RULES_DIR/99-pibridge-w1.rules"; then
    install -m 0644 "$SOURCE/scripts/99-pibridge-w1.rules" "$RULES_DIR/99-pibridge-w1.rules"
    note "installed $RULES_DIR/99-pibridge-w1.rules"
    if command -v udevadm >/dev/null && [ -d /run/udev ]; then
        udevadm control --reload
        udevadm trigger --subsystem-match=w1 --action=add    # probes already attached
    fi
fi

mkdir -p "$UNIT_DIR"
if ! cmp -s "$SOURCE/scripts/pibridge.service" "$UNIT_DIR/pibridge.service"; then
    install -m 0644 "$SOURCE/scripts/pibridge.service" "$UNIT_DIR/pibridge.service"
    note "installed $UNIT_DIR/pibridge.service"
    systemctl daemon-reload
    changed=yes
fi
if [ "$start" = no ]; then
    systemctl enable --quiet pibridge
    say "enabled, not started (--no-start): sudo systemctl start pibridge"
elif systemctl is-active --quiet pibridge; then
    systemctl enable --quiet pibridge
    if [ "$changed" = yes ]; then
        systemctl restart pibridge
        note "restarted pibridge: it runs what was just installed"
    fi
else
    if ! systemctl enable --quiet --now pibridge; then
        echo "install-service: pibridge did not start: journalctl -u pibridge -n 30" >&2
        exit 1
    fi
    note "started pibridge (systemctl status pibridge; pibridge status; journalctl -u pibridge -f)"
fi

if [ ${#created[@]} -eq 0 ]; then
    say "nothing to do: pibridge is installed, up to date and running as it should"
else
    say "done; this run:"; printf '  %s\n' "${created[@]}"
fi
