"""The systemd unit (checked by `systemd-analyze verify` in a throwaway root: no running systemd
needed), the udev rule's command (run against a fake sysfs tree) and install-service.sh."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
UNIT = SCRIPTS / "pibridge.service"
RULE = SCRIPTS / "99-pibridge-w1.rules"
INSTALL = SCRIPTS / "install-service.sh"
SYSTEM_UNIT_DIRS = (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (.ci/run installs it)")


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z]+)=(.*)$", line)
        if match:
            found.setdefault(match.group(1), []).append(match.group(2))
    return found


def _verify(unit_text: str, root: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` of ``unit_text`` installed into a throwaway root holding the
    distribution's own units (for the targets it names) and stand-ins for the executables it
    runs (verify checks that they exist and are executable, inside the root)."""
    system_dir = next(d for d in SYSTEM_UNIT_DIRS if (d / "multi-user.target").exists())
    shutil.copytree(system_dir, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/pibridge.service").write_text(unit_text)
    directives = _directives(unit_text)
    for command in directives["ExecStart"] + directives.get("ExecReload", []):
        executable = root / command.split()[0].lstrip("-@:+!").lstrip("/")
        executable.parent.mkdir(parents=True, exist_ok=True)
        executable.write_text("#!/bin/sh\n")
        executable.chmod(0o755)
    return subprocess.run(["systemd-analyze", "verify", "--man=no", "--generators=no", f"--root={root}",
                           "pibridge.service"], capture_output=True, text=True, timeout=60)


@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    result = _verify(UNIT.read_text(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""         # no warning either (unknown key, bad value)


@needs_systemd_analyze
@pytest.mark.parametrize("mutation", [
    ("WatchdogSec=30", "WatchdogSec=thirty"),          # a bad value: only a warning, still caught
    ("ProtectHome=yes", "ProtectHom=yes"),              # a misspelt directive
    ("ExecReload=/opt/pibridge/venv/bin/pibridge reload --pid $MAINPID",
     "ExecReload=pibridge reload --pid $MAINPID"),                             # not an absolute path
])
def test_the_check_catches_a_broken_unit(tmp_path: Path, mutation: tuple[str, str]) -> None:
    text = UNIT.read_text()
    assert mutation[0] in text
    result = _verify(text.replace(mutation[0], mutation[1]), tmp_path)
    assert result.returncode != 0 or result.stdout + result.stderr != ""


def test_unit_has_what_the_issue_asks_for() -> None:
    directives = _directives(UNIT.read_text())
    expected = {
        "Type": ["notify"], "NotifyAccess": ["main"], "Restart": ["on-failure"],
        "ExecReload": ["/opt/pibridge/venv/bin/pibridge reload --pid $MAINPID"],
        "StateDirectory": ["pibridge"],
        "RuntimeDirectory": ["pibridge"], "User": ["pibridge"], "ProtectSystem": ["strict"],
    }
    for key, value in expected.items():
        assert directives.get(key) == value, key
    assert int(directives["WatchdogSec"][0]) > 0
    assert "BLINKA_SKIP_DEPENDENCY_CHECK=1" in directives["Environment"]
    # hardening that would cut the bridge off its hardware must stay out
    for forbidden in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectKernelTunables",
                      "ProtectClock", "ProcSubset", "MemoryDenyWriteExecute", "PrivateUsers"):
        assert forbidden not in directives, forbidden
    # the service user is the one install-service.sh creates, in the groups the devices belong to
    script = INSTALL.read_text()
    assert "SERVICE_USER=pibridge" in script and "DEVICE_GROUPS=(gpio i2c spi dialout)" in script
    assert directives["ExecStart"][0].startswith("/opt/pibridge/venv/bin/pibridge run --profile "
                                                 "/etc/pibridge/greenhouse.toml")
    assert "VENV=$PREFIX/venv" in script and "PREFIX=/opt/pibridge" in script
    assert "PROFILE=$ETC_DIR/greenhouse.toml" in script and "ETC_DIR=/etc/pibridge" in script


def _rule() -> tuple[str, str]:
    lines = [line for line in RULE.read_text().splitlines() if line and not line.startswith("#")]
    assert len(lines) == 1
    match = re.search(r'KERNEL=="([^"]+)".*RUN\+="([^"]+)"', lines[0])
    assert match and 'SUBSYSTEM=="w1"' in lines[0] and 'ACTION=="add"' in lines[0]
    return match.group(1), match.group(2)


def test_udev_rule_matches_thermometers_not_the_master() -> None:
    kernel, _ = _rule()
    assert fnmatch.fnmatchcase("28-000005abb69d", kernel) and fnmatch.fnmatchcase("10-000802b4b2f9", kernel)
    assert not fnmatch.fnmatchcase("w1_bus_master1", kernel)


def _run_rule(sysfs: Path, devpath: str, shim: Path) -> None:
    """The rule's RUN command as udev runs it: %S the sysfs mount, %p the device path, $$ a $."""
    _, run = _rule()
    command = run.replace("%S", str(sysfs)).replace("%p", devpath).replace("$$", "$")
    argv = re.findall(r"'[^']*'|\S+", command)
    argv = [arg[1:-1] if arg.startswith("'") else arg for arg in argv]
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"}
    subprocess.run(argv, check=True, env=env, timeout=30)


def test_udev_rule_command_makes_therm_bulk_read_group_writable(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    master = sysfs / "devices/w1_bus_master1"
    (master / "28-000005abb69d").mkdir(parents=True)
    bulk = master / "therm_bulk_read"
    bulk.write_text("0\n")
    bulk.chmod(0o644)                                  # the kernel's default: root-only write
    shim = tmp_path / "bin"                            # chgrp stand-in: the test machine has no gpio group
    shim.mkdir()
    calls = tmp_path / "chgrp.calls"
    (shim / "chgrp").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (shim / "chgrp").chmod(0o755)
    _run_rule(sysfs, "/devices/w1_bus_master1/28-000005abb69d", shim)
    assert calls.read_text().split() == ["gpio", str(master / "28-000005abb69d/../therm_bulk_read")]
    assert bulk.stat().st_mode & 0o777 == 0o664
    # an EEPROM on a master without thermometers: nothing to do, no error
    (sysfs / "devices/w1_bus_master2/2d-0000001a2b3c").mkdir(parents=True)
    _run_rule(sysfs, "/devices/w1_bus_master2/2d-0000001a2b3c", shim)
    assert len(calls.read_text().splitlines()) == 1


def test_install_script_is_valid_shell() -> None:
    subprocess.run(["bash", "-n", str(INSTALL)], check=True, timeout=30)
    if shutil.which("shellcheck"):
        result = subprocess.run(["shellcheck", str(INSTALL)], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout


def test_install_script_refuses_without_root() -> None:
    command = ["bash", str(INSTALL)]
    if os.geteuid() == 0:                  # run it as nobody, from a copy nobody can read
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv (util-linux) is needed to drop root")
        with tempfile.TemporaryDirectory() as directory:
            copy = Path(directory) / "install-service.sh"
            shutil.copy(INSTALL, copy)
            Path(directory).chmod(0o755)
            command = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "bash", str(copy)]
            result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    else:
        result = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert result.returncode == 1 and "run as root" in result.stderr
