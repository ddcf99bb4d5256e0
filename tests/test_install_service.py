"""`scripts/install-service.sh` as a grower runs it, in a throwaway root: an overlay of this
machine's own root file system (every write lands in a temporary upper layer), booted as a
container with a real systemd as PID 1 (`systemd-nspawn --boot`, the minimal `basic.target`).
The installer really creates the user, the virtualenv, the unit; systemd really starts the
service, which really provisions itself at an emulated agent on the host and delivers values
(the container shares the host's network); `systemctl reload` really runs `pibridge reload`.

Cases: without systemd (nspawn running the script as PID 1) it refuses and changes nothing;
without a profile, with the unedited example, with paths that would mean something else for the
service (relative, ``~``, state outside /var/lib/pibridge), with a missing agent CA, with a profile
that has problems it refuses and leaves nothing behind; a good profile installs and runs; the
README's trial by hand runs beside it; agent folders closed to others get a search ACL that the
manifest records and uninstall removes; a second run changes nothing; an update whose code
refuses the installed profile leaves the installed code, its stamp and the running service as
they were; a refused reload fails `systemctl reload` and degrades `pibridge status`; uninstall
keeps the queue, `--purge` removes it.

Needs root, overlayfs and systemd-nspawn (Debian's systemd-container, installed by .ci/run):
skipped without them, except in CI (CI=true), where missing tools are a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pibridge.emulator.process import EmulatorProcess

REPO = Path(__file__).resolve().parents[1]
#: The checkout inside the container, bound read-only (where it lies here may be hidden there: a
#: booted container mounts its own /tmp)
SOURCE_IN_ROOT = "/srv/pibridge-source"
INSTALL = f"{SOURCE_IN_ROOT}/scripts/install-service.sh"
BIND_SOURCE = f"--bind-ro={REPO}:{SOURCE_IN_ROOT}"
CA_IN_ROOT = Path("var/lib/teamviewer-iot-agent/certs/TeamViewerAuthority.crt")
SOC_FILE = "/etc/pibridge-test-soc-temp"        # the SoC thermal zone's text, at the sysfs boundary
BOOT_WAIT_S = 60.0
INSTALL_WAIT_S = 400.0                          # a virtualenv built with pip (from its cache)
VALUES_WAIT_S = 90.0
POLL_S = 0.5

IN_CI = os.environ.get("CI") == "true"
TRIAL_UNIT = "pibridge-trial"                   # the by-hand trial, run in the background


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root (overlay mount, a container)"
    if shutil.which("systemd-nspawn") is None or shutil.which("nsenter") is None:
        return "needs systemd-nspawn (apt install systemd-container) and nsenter"
    return ""


pytestmark = pytest.mark.skipif(bool(_missing()) and not IN_CI, reason=_missing() or "ok")

PROFILE = """\
# the greenhouse of this test: one sensor whose "hardware" is a text file
[agent]
host = "localhost"
port = {port}
provision_port = {provision_port}

[[sensor]]
name = "Pi SoC"
driver = "cpu_temperature"
interval = 2
[sensor.options]
sensor_file = "{soc}"
"""


class Root:
    """An overlay of / at ``merged``: reads see this machine, writes land in ``upper``."""

    def __init__(self, base: Path) -> None:
        self.upper, self.work, self.merged = base / "upper", base / "work", base / "merged"
        for d in (self.upper, self.work, self.merged):
            d.mkdir(parents=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir=/,upperdir={self.upper},workdir={self.work}", str(self.merged)],
                       check=True, capture_output=True, text=True)

    def path(self, inside: str | Path) -> Path:
        return self.merged / str(inside).lstrip("/")

    def created(self, inside: str | Path) -> bool:
        """Whether ``inside`` was written in this root (exists in the upper layer)."""
        return (self.upper / str(inside).lstrip("/")).exists() or (
            self.upper / str(inside).lstrip("/")).is_symlink()

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.merged)], capture_output=True)


class Container:
    """``root`` booted with systemd as PID 1; `run` executes a command inside (nsenter)."""

    def __init__(self, root: Root) -> None:
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "-q", "--keep-unit", "--register=no", "--link-journal=no", BIND_SOURCE,
             "-D", str(root.merged), "--boot", "--", "systemd.unit=basic.target"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.pid = _poll(self._init_pid, BOOT_WAIT_S, "the container's systemd")

        def booted() -> subprocess.CompletedProcess[str] | None:
            """systemd's answer once its socket is there (before: "Failed to connect to bus")."""
            done = self.run("systemctl", "is-system-running", "--wait", timeout=BOOT_WAIT_S)
            return None if "Failed to connect" in done.stderr else done
        done = _poll(booted, BOOT_WAIT_S, "the container's systemd to listen")
        assert done.stdout.strip() in ("running", "degraded"), done.stdout + done.stderr

    def _init_pid(self) -> int | None:
        assert self.proc.poll() is None, "systemd-nspawn exited: " + (
            self.proc.stderr.read().decode() if self.proc.stderr else "")
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                    comm = (entry / "comm").read_text().strip()
                except (OSError, IndexError, ValueError):
                    continue
                if ppid == self.proc.pid and comm == "systemd":
                    return int(entry.name)
        return None

    def run(self, *argv: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
               "HOME": "/root", **{k: v for k, v in os.environ.items() if k.startswith("PIP_")}}
        return subprocess.run(["nsenter", "-t", str(self.pid), "-a", "--", "env", "-i",
                               *(f"{k}={v}" for k, v in env.items()), *argv],
                              capture_output=True, text=True, timeout=timeout)

    def status(self) -> subprocess.CompletedProcess[str]:
        """`pibridge status` (the one on the PATH) as an operator runs it. Through a transient
        unit with the service's ProtectProc=: nspawn gives the container its own boot id by a
        mount over /proc/sys/kernel/random/boot_id, which a unit with ProtectProc= (a fresh
        /proc) does not see; on a Pi both read the kernel's, here both must read the same one."""
        return self.run("systemd-run", "--quiet", "--wait", "--pipe", "--collect",
                        "-p", "ProtectProc=invisible", "/usr/local/bin/pibridge", "status")

    def install(self, *args: str, timeout: float = INSTALL_WAIT_S) -> subprocess.CompletedProcess[str]:
        return self.run("bash", INSTALL, *args, timeout=timeout)

    def start_as(self, user: str, unit: str, command: str) -> None:
        """``bash -c COMMAND`` as ``user`` in the background, as transient unit ``unit`` (its exit
        status stays readable: `exit_status`); a shell's Ctrl-C is ``systemctl kill -s INT``."""
        done = self.run("systemd-run", "--quiet", f"--unit={unit}", f"--uid={user}", "--remain-after-exit",
                        "-p", "Environment=PATH=/usr/local/bin:/usr/bin:/bin", "bash", "-c", command)
        assert done.returncode == 0, done.stdout + done.stderr

    def exit_status(self, unit: str) -> str | None:
        """``CODE/STATUS`` of ``unit``'s main process once it exited (``exited/0``: exit 0), else None."""
        shown = dict(line.split("=", 1) for line in self.run(
            "systemctl", "show", "-p", "ExecMainCode,ExecMainStatus,ExecMainExitTimestampMonotonic",
            unit).stdout.split())
        if shown.get("ExecMainExitTimestampMonotonic", "0") == "0":
            return None
        return f"{'exited' if shown['ExecMainCode'] == '1' else 'killed'}/{shown['ExecMainStatus']}"

    def main_pid(self) -> str:
        return self.run("systemctl", "show", "-p", "MainPID", "--value", "pibridge").stdout.strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _poll(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not (result := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        pause.wait(POLL_S)
    return result


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Root]:
    assert not _missing(), _missing()
    made = Root(tmp_path / "root")
    yield made
    made.unmount()


NOTHING_INSTALLED = ("/opt/pibridge", "/etc/pibridge", "/etc/systemd/system/pibridge.service",
                     "/usr/local/bin/pibridge", "/etc/udev/rules.d/99-pibridge-w1.rules", "/var/lib/pibridge")


def assert_nothing_installed(root: Root) -> None:
    for path in NOTHING_INSTALLED:
        assert not root.created(path), f"{path} was created"
    assert "pibridge:" not in root.path("/etc/passwd").read_text()
    assert not root.created("/etc/passwd") and not root.created("/etc/group")


def test_without_systemd_it_refuses_and_changes_nothing(root: Root, tmp_path: Path) -> None:
    profile = root.path("/root/my.toml")
    profile.write_text(PROFILE.format(port=1, provision_port=2, soc=SOC_FILE))
    done = subprocess.run(["systemd-nspawn", "-q", "--keep-unit", "--register=no", "--link-journal=no",
                           BIND_SOURCE,
                           "-D", str(root.merged), "--pipe",
                           "bash", INSTALL, "--profile", "/root/my.toml"],
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "systemd is not running as PID 1" in done.stderr and "nothing was changed" in done.stderr
    assert_nothing_installed(root)


@pytest.mark.timeout(900)   # two virtualenvs built with pip, a container booted: minutes on a loaded machine
def test_install_run_reload_update_and_uninstall_under_a_real_systemd(root: Root, tmp_path: Path) -> None:
    emulator = EmulatorProcess(tmp_path / "agent")
    emulator.start()
    container = Container(root)
    try:
        good = PROFILE.format(port=emulator.port, provision_port=emulator.provision_port, soc=SOC_FILE)
        root.path(SOC_FILE).write_text("48312\n")
        root.path("/root/example.toml").write_bytes((REPO / "profiles" / "greenhouse.toml").read_bytes())
        root.path("/root/my.toml").write_text(good)
        root.path("/root/broken.toml").write_text(good.replace("cpu_temperature", "cpu_temprature"))

        # refusals before anything is created: no profile, the unedited example, no agent CA
        root.path("/root/relative.toml").write_text(good.replace(
            "[agent]\n", '[agent]\nca_file = "ca.crt"\ncert_folder = "~/certs"\n').replace(
            "[[sensor]]", '[bridge]\nstate_dir = "state"\nhttp_token_file = "~pi/web-token"\n\n[[sensor]]'))
        root.path("/root/outside.toml").write_text(good.replace(
            "[agent]\n", '[agent]\ncert_folder = "/var/lib/pibridge/../certs"\n').replace(
            "[[sensor]]", '[bridge]\nstate_dir = "/srv/pibridge"\n\n[[sensor]]'))
        refusals: list[tuple[tuple[str, ...], str]] = [
            ((), "which profile?"),
            (("--profile", "/root/example.toml"), "unedited example"),
            (("--profile", "/root/my.toml"), "install the TeamViewer IoT Agent first")]
        for args, expect in refusals:
            done = container.install(*args)
            assert done.returncode == 1 and expect in done.stderr, done.stdout + done.stderr
            assert "nothing was changed" in done.stderr
            assert_nothing_installed(root)
        # paths that would mean something else once copied to /etc/pibridge and run as pibridge in
        # the unit's sandbox: one line each, before anything is created (the CA is not even looked for)
        paths = container.install("--profile", "/root/relative.toml")
        lines = paths.stderr.strip().splitlines()
        assert paths.returncode == 1 and len(lines) == 5, paths.stdout + paths.stderr
        for key, why in (("[agent] ca_file", "is a relative path"), ("[agent] cert_folder", "starts with ~"),
                         ("[bridge] state_dir", "is a relative path"),
                         ("[bridge] http_token_file", "starts with ~")):
            assert any(f"/root/relative.toml: {key} = " in line and why in line for line in lines), lines
        assert "nothing was changed" in lines[-1]
        outside = container.install("--profile", "/root/outside.toml")
        lines = outside.stderr.strip().splitlines()
        assert outside.returncode == 1 and len(lines) == 3, outside.stdout + outside.stderr
        assert "[agent] cert_folder = '/var/lib/pibridge/../certs' is outside /var/lib/pibridge" in lines[0]
        assert "[bridge] state_dir = '/srv/pibridge' is outside /var/lib/pibridge" in lines[1]
        assert_nothing_installed(root)
        ca = root.path(CA_IN_ROOT)
        ca.parent.mkdir(parents=True)
        shutil.copy(emulator.ca_file, ca)
        ca.chmod(0o600)                                   # root's only, as the agent leaves it
        agent_dir = root.path("/var/lib/teamviewer-iot-agent")
        agent_dir.chmod(0o700)                            # closed to others: the service needs search (x)

        # a profile with problems: pibridge check names them; the virtualenv it built is gone again
        done = container.install("--profile", "/root/broken.toml")
        assert done.returncode == 1, done.stdout + done.stderr
        assert "cpu_temprature" in done.stdout + done.stderr and "nothing was installed" in done.stderr
        assert_nothing_installed(root)
        assert "pibridge" not in container.run("getfacl", "-p", "/var/lib/teamviewer-iot-agent").stdout

        # a good profile: installed, started by systemd, values arrive at the agent
        container.run("mkdir", "-p", "/run/systemd/timesync")
        container.run("touch", "/run/systemd/timesync/synchronized")     # NTP's flag: the clock is set
        done = container.install("--profile", "/root/my.toml")
        assert done.returncode == 0, done.stdout + done.stderr
        for said in ("created /opt/pibridge/venv", "created system user pibridge",
                     "installed /root/my.toml as /etc/pibridge/greenhouse.toml",
                     "linked /usr/local/bin/pibridge", "read access to the agent's CA", "started pibridge"):
            assert said in done.stdout, done.stdout
        assert container.run("systemctl", "is-active", "pibridge").stdout.strip() == "active"
        manifest = root.path("/etc/pibridge/created-by-install").read_text().splitlines()
        assert "search /var/lib/teamviewer-iot-agent" in manifest, manifest
        assert "user:pibridge:--x" in container.run("getfacl", "-p", "/var/lib/teamviewer-iot-agent").stdout
        assert root.path("/opt/pibridge/venv").is_symlink()

        def delivered() -> bool:
            sensors = {s["name"]: s for c in emulator.dump().get("clients", []) for s in c.get("sensors", [])}
            soc = sensors.get("Pi SoC")
            return bool(soc) and any(m.get("values") for m in soc.get("metrics", []))
        _poll(delivered, VALUES_WAIT_S, "the service's values at the agent")
        assert container.run("sh", "-c", "command -v pibridge").stdout.strip() == "/usr/local/bin/pibridge"
        status = container.status()
        assert status.returncode == 0, status.stdout + status.stderr

        # README step 5, by hand as `pi`, exactly as written (the binary on the PATH is the service's)
        assert container.run("useradd", "--create-home", "pi").returncode == 0
        root.path("/home/pi/my-greenhouse.toml").write_text(good)
        by_hand = ("sudo setfacl -m u:pi:r /var/lib/teamviewer-iot-agent/certs/TeamViewerAuthority.crt",
                   "pibridge run --profile my-greenhouse.toml --state-dir ~/pibridge-try "
                   "--cert-folder ~/pibridge-try/certs")
        assert container.run(*by_hand[0].split()[1:]).returncode == 0              # sudo: we are root
        # pi needs search access to the agent's folder we closed above (the service has its ACL)
        assert container.run("setfacl", "-m", "u:pi:x", "/var/lib/teamviewer-iot-agent").returncode == 0
        container.start_as("pi", TRIAL_UNIT, f"cd ~ && exec {by_hand[1]}")
        trial_log = ("journalctl", "-q", "-o", "cat", "-u", TRIAL_UNIT)

        def both_deliver() -> bool:          # the service's client and the trial's, each with values
            assert container.exit_status(TRIAL_UNIT) is None, container.run(*trial_log).stdout
            clients = emulator.dump().get("clients", [])
            return len(clients) == 2 and all(
                any(m.get("values") for s in c.get("sensors", []) for m in s.get("metrics", []))
                for c in clients)
        _poll(both_deliver, VALUES_WAIT_S, "the trial's values at the agent")
        assert container.run("systemctl", "kill", "-s", "INT", TRIAL_UNIT).returncode == 0   # Ctrl-C
        trial_end = _poll(lambda: container.exit_status(TRIAL_UNIT), VALUES_WAIT_S, "the trial to stop")
        log = container.run(*trial_log).stdout
        assert trial_end == "exited/0", log
        assert "Traceback" not in log
        container.run("systemctl", "stop", TRIAL_UNIT)
        removed = container.run("runuser", "-u", "pi", "--", "bash", "-c",
                                "cd ~ && pibridge deprovision --profile my-greenhouse.toml "
                                "--cert-folder ~/pibridge-try/certs")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert len(emulator.dump()["clients"]) == 1

        # README step 8: the installed profile is root's and pibridge's: `pibridge check` needs sudo
        as_pi = container.run("runuser", "-u", "pi", "--", "pibridge", "check", "--profile",
                              "/etc/pibridge/greenhouse.toml")
        assert as_pi.returncode != 0 and "Permission denied" in as_pi.stderr, as_pi.stdout + as_pi.stderr
        as_root = container.run("pibridge", "check", "--profile", "/etc/pibridge/greenhouse.toml")  # sudo …
        assert as_root.returncode == 0, as_root.stdout + as_root.stderr

        # a second run: nothing to do
        again = container.install()
        assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout + again.stderr

        # an update whose code refuses the installed profile: built in a staging copy, checked
        # there, thrown away; the installed code, its stamp and the running service stay
        installed = root.path("/etc/pibridge/greenhouse.toml")
        stamp = root.path("/opt/pibridge/venv/.pibridge-source")
        stamp.write_text("an older checkout\n")          # the checkout moved on: an update
        code_before, pid_before = os.readlink(root.path("/opt/pibridge/venv")), container.main_pid()
        installed.write_text(good.replace("cpu_temperature", "cpu_temprature"))
        update = container.install(timeout=INSTALL_WAIT_S)
        assert update.returncode == 1 and "cpu_temprature" in update.stdout + update.stderr, update.stderr
        assert "the running service stay as they were" in update.stderr, update.stderr
        assert os.readlink(root.path("/opt/pibridge/venv")) == code_before
        assert stamp.read_text() == "an older checkout\n"
        assert sorted(p.name for p in root.path("/opt/pibridge").iterdir()) == sorted(
            ["docs", "venv", code_before])                # no staging copy left behind
        assert container.main_pid() == pid_before
        assert container.run("systemctl", "is-active", "pibridge").stdout.strip() == "active"

        # reload: refused → systemctl reload fails, status degraded; fixed → succeeds
        installed.write_text(good.replace("cpu_temperature", "cpu_temprature"))
        refused = container.run("systemctl", "reload", "pibridge")
        assert refused.returncode != 0, refused.stdout + refused.stderr
        degraded = container.status()
        assert degraded.returncode == 1 and "running an older profile" in degraded.stdout, degraded.stdout
        installed.write_text(good.replace("interval = 2", "interval = 3"))
        applied = container.run("systemctl", "reload", "pibridge")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert container.status().returncode == 0

        # uninstall keeps the queue and the profile; --purge removes them
        gone = container.install("--uninstall")
        assert gone.returncode == 0, gone.stdout + gone.stderr
        assert container.run("systemctl", "is-active", "pibridge").stdout.strip() != "active"
        assert not root.path("/opt/pibridge").exists()
        assert not root.path("/usr/local/bin/pibridge").is_symlink()
        assert root.path("/var/lib/pibridge").is_dir() and root.path("/etc/pibridge/greenhouse.toml").exists()
        assert "kept" in gone.stdout
        for acl_of in ("/var/lib/teamviewer-iot-agent", str(CA_IN_ROOT.parent), "/" + str(CA_IN_ROOT)):
            assert "user:pibridge" not in container.run("getfacl", "-p", acl_of).stdout, acl_of
        purged = container.install("--uninstall", "--purge")
        assert purged.returncode == 0, purged.stdout + purged.stderr
        assert not root.path("/var/lib/pibridge").exists() and not root.path("/etc/pibridge").exists()
        assert "pibridge:" not in root.path("/etc/passwd").read_text()
    finally:
        container.stop()
        emulator.stop()
