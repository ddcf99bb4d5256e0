"""Every `pibridge` command under a table of bad arguments, as real subprocesses: no traceback,
exactly one line on stderr, a non-zero exit.

Adding a command's rows is one line each in `ROWS`:

    row("check --profile {missing}", "not found"),

The command is split like a shell would (`shlex`) after its ``{placeholders}`` are filled from
`World` (see its fields); the optional second argument is a fragment the one line must contain.
`test_every_command_has_rows` walks the parser, so a new command without rows fails the suite.
A row that fails because of code owned by another branch is marked with `owned_by` (a strict
xfail: the integrator removes the mark once that branch is merged and the row passes).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _pytest.mark.structures import ParameterSet

from pibridge.agent import AgentSettings, CredentialFiles, provision
from pibridge.bridge.service import StateDirLock
from pibridge.cli import build_parser
from pibridge.testing import Emulator, free_port

#: Seconds a row may run before it counts as hanging (a guard, not a timing assertion: a healthy
#: row takes well under a second; the ones that reach the emulator a few).
GUARD_S = 60.0
#: The shipped weather profile, for `reset-total` rows.
WEATHER = shlex.quote(str(Path(__file__).resolve().parent.parent / "profiles" / "weather.toml"))
#: The guard of rows expected to block today (xfailed): short, so the suite stays fast.
HANG_GUARD_S = 5.0


def row(command: str, expect: str = "", *, owned_by: str = "", guard_s: float = GUARD_S) -> ParameterSet:
    """One bad invocation. ``owned_by``: the branch whose fix makes the row pass (strict xfail)."""
    marks = [pytest.mark.xfail(strict=True, reason=f"fixed on branch {owned_by}")] if owned_by else []
    return pytest.param(command, expect, guard_s, marks=marks, id=command)


AGENT_COMMANDS = ("provision", "deprovision", "ping", "inventory")
#: Bad flags every agent command shares, with the fragment its one line must carry.
AGENT_FLAG_ROWS = (
    ("--timeout 0", "more than 0 and at most"),
    ("--timeout -1", "more than 0 and at most"),
    ("--timeout nan", "more than 0 and at most"),
    ("--timeout inf", "more than 0 and at most"),
    ("--timeout 1e300", "more than 0 and at most"),
    ("--timeout soon", "not a number of seconds"),
    ("--port 0", "port must be a TCP port number"),
    ("--port 70000", "port must be a TCP port number"),
    ("--port abc", "invalid int value"),
    ("--provision-port -5", "provision_port must be a TCP port number"),
    ("--host ''", "host must be"),
    ("--client-name ../../tmp/evil", "cannot contain '/'"),
    ("--client-name " + "n" * 200, "at most 64"),
    ("--client-name ''", "must not be empty"),
    ("--provisioning override", "invalid choice"),
    ("--cert-folder ~nosuchuser/certs", "no such user"),
    ("--ca-file ~nosuchuser/ca.crt", "no such user"),
    ("--profile ~nosuchuser/greenhouse.toml", "no such user"),
    ("--profile {missing}", ""),
    ("--profile {bad_client_profile}", "client_name"),
    ("{agent} --cert-folder {certs} --ca-file {garbage}", "is not a PEM certificate"),
    ("{agent} --cert-folder {certs} --ca-file {missing}", "not found"),
    ("--bogus", "unrecognized arguments"),
)

ROWS: list[ParameterSet] = [
    # -- top level
    row("", "required: COMMAND"),
    row("--bogus", ""),
    row("nosuchcommand", "invalid choice"),
    # -- agent commands: the shared flags
    *(row(f"{command} {flags}", expect) for command in AGENT_COMMANDS for flags, expect in AGENT_FLAG_ROWS),
    # -- agent commands: what the agent or the disk make of them
    row("provision {agent} --cert-folder {certs} --provision-port {port} --override", "asks for a client "
        "certificate"),
    row("provision {agent} --cert-folder {fresh} --provision-port {free}", "connection refused"),
    row("provision {agent} --cert-folder {fresh} --host nosuch.invalid", "cannot resolve host"),
    row("provision {agent} --cert-folder {a_file}", "cannot create the cert folder"),
    row("provision {agent} --cert-folder {broken_key}", "is not an unencrypted PEM private key"),
    row("provision {agent} --cert-folder {mismatch}", "does not belong to certificate"),
    row("provision {agent} --cert-folder {cert_is_a_folder} --override", "in the way"),
    row("ping {agent} --cert-folder {fresh}", "run `pibridge provision` first"),
    row("ping {agent} --cert-folder {certs} --port {free}", "connection refused"),
    row("ping {agent} --cert-folder {certs} --host nosuch.invalid", "cannot resolve host"),
    row("ping {agent} --cert-folder {certs} --port {provision_port} --timeout 1",
        "is it the provisioning port?"),
    row("ping {agent} --cert-folder {broken_key}", "cannot load certificate"),
    row("ping {agent} --cert-folder {certs} --client-name other", "run `pibridge provision` first"),
    row("inventory {agent} --cert-folder {certs} --port {free}", "connection refused"),
    row("inventory {agent} --cert-folder {fresh}", "run `pibridge provision` first"),
    row("deprovision {agent} --cert-folder {certs} --port {free}", "connection refused"),
    row("deprovision {agent} --cert-folder {fresh}", "run `pibridge provision` first"),
    # -- emulator
    row("emulator", "required: COMMAND"),
    row("emulator serve --port abc", "expected a port number"),
    row("emulator serve --inject-error 9:0.5", "can be injected"),
    row("emulator serve --inject-error 1:2", "SHARE must lie in 0..1"),
    row("emulator serve --state-dir {state} --port 70000 --provision-port {free}", "70000"),
    row("emulator serve --state-dir {a_file} --port {free} --provision-port {free2}", "not a directory"),
    row("emulator serve --state-dir ~nosuchuser/state --port {free} --provision-port {free2}", "nosuchuser"),
    row("emulator serve --state-dir {garbage_ca_state} --port {free} --provision-port {free2}", "ca."),
    row("emulator dump --state-dir {missing}", "no emulator state"),
    row("emulator dump --state-dir {garbage_db_state}", "emulator.db"),
    row("emulator wipe --state-dir {a_file}", "not a directory"),
    row("emulator wipe --bogus", "unrecognized arguments"),
    # -- drivers
    row("drivers --bogus", "unrecognized arguments"),
    row("read", "name a driver"),
    row("read nosuch", "unknown driver"),
    row("read bme280 --option address=0x99", "address"),
    row("read bme280 --option nokey", "KEY=VALUE"),
    row("read dht22 --option pin=abc", "pin"),
    row("read cpu_temperature --option sensor_file={missing}", "does not exist"),
    row("read cpu_temperature --option sensor_file={garbage}", "millidegrees"),
    row("read cpu_temperature --option sensor_file={fifo}", "no data within", guard_s=HANG_GUARD_S),
    row("read cpu_temperature --option sensor_file=/dev/zero", "not a thermal zone file"),
    row("read cpu_temperature --option read_text=x", "unknown option read_text"),
    row("read dht22 --simulate", "option pin is required"),
    row("read ds18b20 --simulate", "option device_id is required"),
    row("read cpu_temperature --simulate --option read_text=x", "unknown option read_text"),
    row("read dht22 --option pin=17 --option clock=1", "unknown option clock"),
    row("read dht22 --option pin=17 --option sensor=1", "unknown option sensor"),
    row("read dht22 --simulate --option pin=17 --option sensor=1", "unknown option sensor"),
    row("read ds18b20 --option device_id=28-0000075e3a1c --option files=1", "unknown option files"),
    row("read bme280 --option bus=1", "unknown option bus"),
    row("read bme280 --simulate --option bus=1", "unknown option bus"),
    row("read mcp3008 --option channel=0 --option spi=1", "unknown option spi"),
    row("read digital_input --option pin=17 --option pin_factory=1", "unknown option pin_factory"),
    row("scan extra", "unrecognized arguments"),
    row("scan --profile-out {a_file}", "exists"),
    row("scan --profile-out {missing}/deeper/p.toml", "cannot write"),
    row("read --profile {missing}", "cannot read the profile"),
    row("read --profile {garbage}", "TOML syntax error"),
    row("read --profile {unknown_driver_profile} --simulate", 'unknown driver "no_such_chip"'),
    row("read bme280 --profile {garbage}", "not both"),
    row("read --profile /dev/null", "no [[sensor]]"),
    # -- profiles
    row("check", "required: --profile"),
    row("check --profile {missing}", "cannot read the profile"),
    row("check --profile {garbage}", "TOML syntax error"),
    row("check --profile {a_file}", "TOML syntax error"),
    row("check --profile /dev/zero", "larger than 32 MiB"),
    row("check --profile /dev/null", "no [[sensor]]"),
    row("profile", "required: SUBCOMMAND"),
    row("profile list extra", "unrecognized arguments"),
    row("profile example orchard", "no example profile 'orchard'"),
    row("profile example greenhouse --output {a_file}", "exists"),
    row("profile example greenhouse --output {missing}/deeper/p.toml", "cannot write"),
    # -- status
    row("status --runtime-dir {a_file}", "not running"),
    row("status --profile {missing}", "cannot read the profile"),
    row("status --stale-after abc", "not a number of seconds"),
    row("status --stale-after nan", "finite number of seconds above 0"),
    row("status --agent-grace -5", "finite number of seconds above 0"),
    row("status --agent-grace inf", "finite number of seconds above 0"),
    row("status --runtime-dir {missing}", "not running"),
    row("status --profile {garbage}", "TOML syntax error"),
    # status reads only [bridge] (a profile broken elsewhere still names its running bridge)
    row("status --profile {bad_client_profile}", "not running"),
    row("status --bogus", "unrecognized arguments"),
    row("reload --runtime-dir {missing}", "no running bridge found"),
    row("reload --pid 1 --runtime-dir {a_file}", "no running bridge with pid 1 found"),
    row("reload --profile {missing}", "cannot read the profile"),
    row("reload --profile {garbage}", "TOML syntax error"),
    row("reload --pid abc", "invalid int value"),
    row("reload --pid 1 --profile {missing}", "not allowed with argument"),
    row("reload --timeout 0", "finite number of seconds above 0"),
    row("reload --timeout nan", "finite number of seconds above 0"),
    # -- run
    row("run", "required: --profile"),
    row("run --simulate --profile {missing}", "cannot read the profile"),
    row("run --simulate --profile {garbage}", "TOML syntax error"),
    row("run --simulate --profile {unknown_driver_profile}", 'unknown driver "no_such_chip"'),
    row("run --simulate --profile {bad_client_profile}", "client_name"),
    row("run --simulate --profile ~nosuchuser/greenhouse.toml", "no such user"),
    row("run --simulate --profile {run_profile} --port 0", "port must be a TCP port number"),
    row("run --simulate --profile {run_profile} --port abc", "invalid int value"),
    row("run --simulate --profile {run_profile} --client-name ../../tmp/evil", "cannot contain '/'"),
    row("run --simulate --profile {run_profile} --log-format xml", "invalid choice"),
    row("run --simulate --profile {run_profile} --provisioning override", "invalid choice"),
    row("run --simulate --profile {run_profile} --trust-clock --clock-sync-file {missing}",
        "not allowed with"),
    row("run --simulate --profile {run_profile} --state-dir ~nosuchuser/state", "no such user"),
    row("run --simulate --profile {run_profile} --timeout 3", "unrecognized arguments"),
    row("run --simulate --profile {run_profile} --state-dir {a_file}", "is not a directory (a regular file)"),
    row("run --simulate --profile {run_profile} --state-dir {locked_state}", "another bridge (PID"),
    # -- issue 20 §5: bad input at the edges (state directories, FIFOs, NUL bytes, host names)
    *(row(f"run --simulate --profile {{run_profile}} --state-dir {state}", expect)
      for state, expect in (
          ("{loop}", "a loop of symbolic links"),
          ("{dangling}", "dangling symbolic link (to"),
          ("/proc/self", "cannot write in the state directory /proc/self"),
          ("''", "--state-dir: must not be empty"),
          ("{long_path}", "a path may have at most 4095"),
          ("{long_name}", "a file name may have at most 255"),
          ("{non_utf8}", "must be UTF-8 text"),
      )),
    row("run --simulate --profile {nul_state_profile}", "bridge.state_dir: must not contain a NUL byte"),
    row("run --simulate --profile {fifo}", "no data within"),
    row("check --profile {fifo}", "no data within"),
    row("status --profile {fifo}", "no data within"),
    row("status --runtime-dir {fifo_runtime}", "status unreadable"),
    row("status --runtime-dir {nested_runtime}", "status unreadable"),
    row("check --profile {nul_state_profile}", "bridge.state_dir: must not contain a NUL byte"),
    row("check --profile {nul_host_profile}", "agent.host: must be a host name or address"),
    row("check --profile {bad_host_profile}", "is not a valid host name"),
    row("check --profile {nul_ca_profile}", "agent.ca_file: must not contain a NUL byte"),
    row("check --profile {nul_cert_profile}", "agent.cert_folder: must not contain a NUL byte"),
    # [bridge] http_token_file: checked (bounded: a FIFO or /dev/zero is refused at once, not read)
    *(row(f"{command} --profile {{{profile}}}", expect, guard_s=guard)
      for command in ("check", "run --simulate") for profile, expect, guard in (
          ("token_missing_profile", "missing-token does not exist", GUARD_S),
          ("token_fifo_profile", "fifo: a FIFO, not a regular file", HANG_GUARD_S),
          ("token_zero_profile", "http_token_file: cannot read the token file /dev/zero: a device, not a "
                                 "regular file", HANG_GUARD_S),
          ("token_dir_profile", ": is a directory", GUARD_S),
          ("token_short_profile", "short-token must hold at least 16 printable", GUARD_S),
          ("token_huge_profile", "huge-token is larger than 4096 bytes", GUARD_S),
      )),
    *(row(f"{command} {{agent}} --cert-folder {{certs}} --profile {profile}", expect)
      for command in AGENT_COMMANDS for profile, expect in (
          ("{nul_host_profile}", "agent.host: must be a host name or address"),
          ("{nul_ca_profile}", "agent.ca_file: must not contain a NUL byte"),
          ("{nul_cert_profile}", "agent.cert_folder: must not contain a NUL byte"),
      )),
    *(row(f"{command} {{agent}} --cert-folder {{certs}} --host {host}", expect)
      for command in AGENT_COMMANDS for host, expect in (
          ("a..b", "is not a valid host name"),
          ("x" * 64 + ".example", "is not a valid host name"),
      )),
    *(row(f"emulator {command} --state-dir {state}" + (" --port {free} --provision-port {free2}"
                                                        if command == "serve" else ""), expect)
      for command in ("serve", "dump", "wipe") for state, expect in (
          ("''", "--state-dir must not be empty"),
          ("{loop}", "a loop of symbolic links"),
          ("{dangling}", "dangling symbolic link (to"),
          ("{long_path}", "a path may have at most 4095"),
          ("{long_name}", "a file name may have at most 255"),
          ("{non_utf8}", "must be UTF-8 text"),
      )),
    row("emulator serve --state-dir /proc/self --port {free} --provision-port {free2}",
        "cannot write in the state directory /proc/self"),
    # -- reset-total (the shipped weather profile: "Rain" keeps a total, "Air" does not)
    row("reset-total", "required: sensor, --profile"),
    row("reset-total Rain --profile {missing}", "cannot read the profile"),
    row("reset-total Rain --profile {garbage}", "TOML syntax error"),
    row(f"reset-total Nope --profile {WEATHER}", "no sensor 'Nope'"),
    row(f"reset-total Air --profile {WEATHER}", "keeps no running total"),
    row(f"reset-total Rain --profile {WEATHER} --state-dir {{locked_state}}",
        "not resetting while the bridge runs"),
    row(f"reset-total Rain --profile {WEATHER} --state-dir {{a_file}}", "not a directory"),
]


@dataclass
class World:
    """What the rows' ``{placeholders}`` stand for (set up once per module)."""

    agent: str  # --host/--port/--provision-port/--ca-file of the running emulator
    port: int  # the emulator's API port
    provision_port: int  # the emulator's provisioning port
    free: int  # ports nothing listens on
    free2: int
    certs: Path  # a provisioned cert folder
    fresh: Path  # a cert folder that does not exist yet
    broken_key: Path  # a provisioned folder whose key is garbage
    mismatch: Path  # certificate of one client beside the key of another
    cert_is_a_folder: Path  # a provisioned folder whose certificate name is taken by a folder
    a_file: Path  # a regular file where a folder belongs
    garbage: Path  # a file of text that is nothing in particular
    missing: Path  # a path that does not exist
    fifo: Path  # a named pipe nobody writes
    state: Path  # an empty folder for an emulator's state
    garbage_ca_state: Path  # a state folder whose ca.crt and ca.key are garbage
    garbage_db_state: Path  # a state folder whose database is garbage
    bad_client_profile: Path  # a profile whose [agent] client_name escapes the cert folder
    run_profile: Path  # a good profile with one simulated sensor
    unknown_driver_profile: Path  # a profile whose one sensor names a driver nobody has
    locked_state: Path  # a bridge state directory whose lock this test process holds
    loop: Path  # a symbolic link to a symbolic link to it
    dangling: Path  # a symbolic link to nothing
    long_path: str  # a path of 6,029 bytes (a path may have 4,095)
    long_name: str  # a name of 300 bytes (a name may have 255)
    non_utf8: str  # a name with a byte that is not UTF-8 (as a shell passes it)
    nul_state_profile: Path  # [bridge] state_dir with a NUL byte
    nul_host_profile: Path  # [agent] host with a NUL byte
    bad_host_profile: Path  # [agent] host "a..b" (IDNA cannot encode it)
    nul_ca_profile: Path  # [agent] ca_file with a NUL byte
    nul_cert_profile: Path  # [agent] cert_folder with a NUL byte
    fifo_runtime: Path  # a runtime directory whose status file is a FIFO
    nested_runtime: Path  # a runtime directory whose status file is 10 MB of "["
    token_missing_profile: Path  # [bridge] http_token_file names nothing
    token_fifo_profile: Path  # ... a FIFO nobody writes
    token_zero_profile: Path  # ... /dev/zero
    token_dir_profile: Path  # ... a directory
    token_short_profile: Path  # ... a file of 5 characters
    token_huge_profile: Path  # ... a file of 1 MB

    def fill(self, command: str) -> list[str]:
        values = {name: shlex.quote(str(value)) for name, value in vars(self).items() if name != "agent"}
        return shlex.split(command.format(agent=self.agent, **values))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("hostile-cli")
    emulator = Emulator(base / "emulator")
    emulator.start()
    lock = StateDirLock(base / "locked-state")  # as a running bridge holds it
    try:
        world = _make_world(base, emulator)
        world.locked_state.mkdir()
        lock.acquire()
        yield world
    finally:
        lock.release()
        emulator.stop()


def _make_world(base: Path, emulator: Emulator) -> World:
    def provisioned(name: str) -> CredentialFiles:
        settings = AgentSettings(host=emulator.host, port=emulator.port,
                                 provision_port=emulator.provision_port, ca_file=emulator.ca_file,
                                 cert_folder=base / name)
        provision(settings)
        return CredentialFiles(settings.cert_folder, settings.client_name)

    certs, broken, other, folder_cert = (provisioned(n) for n in ("certs", "broken", "other", "folder-cert"))
    broken.key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    mismatch = CredentialFiles(base / "mismatch", certs.client_name)  # the SDK's plain layout
    mismatch.folder.mkdir(mode=0o700)
    mismatch.cert.write_bytes(certs.cert.read_bytes())
    mismatch.key.write_bytes(other.key.read_bytes())
    folder_cert.cert.unlink()
    folder_cert.cert.mkdir()
    garbage = base / "garbage.txt"
    garbage.write_text("this is not a certificate, a key, a profile or a database\n")
    a_file = base / "a-file"
    a_file.write_text("a file\n")
    fifo = base / "fifo"
    os.mkfifo(fifo)
    garbage_ca_state = base / "garbage-ca-state"
    garbage_ca_state.mkdir()
    for name in ("ca.crt", "ca.key"):
        (garbage_ca_state / name).write_text("garbage\n")
    garbage_db_state = base / "garbage-db-state"
    garbage_db_state.mkdir()
    (garbage_db_state / "emulator.db").write_bytes(b"garbage, not SQLite\n" * 64)
    profile = base / "bad-client.toml"
    profile.write_text('[agent]\nclient_name = "../../tmp/evil"\n')
    run_profile = base / "run.toml"
    run_profile.write_text('[[sensor]]\nname = "Pi SoC"\ndriver = "cpu_temperature"\ninterval = 5\n')
    unknown_driver_profile = base / "unknown-driver.toml"
    unknown_driver_profile.write_text('[[sensor]]\nname = "Xylo"\ndriver = "no_such_chip"\ninterval = 5\n')
    free = free_port()
    free2 = free_port()
    while free2 == free:
        free2 = free_port()
    return World(
        agent=(f"--host {emulator.host} --port {emulator.port} --provision-port {emulator.provision_port} "
               f"--ca-file {shlex.quote(str(emulator.ca_file))}"),
        port=emulator.port, provision_port=emulator.provision_port, free=free, free2=free2,
        certs=certs.folder, fresh=base / "fresh" / "certs",
        broken_key=broken.folder, mismatch=mismatch.folder, cert_is_a_folder=folder_cert.folder,
        a_file=a_file, garbage=garbage, missing=base / "missing", fifo=fifo, state=base / "state",
        garbage_ca_state=garbage_ca_state, garbage_db_state=garbage_db_state, bad_client_profile=profile,
        run_profile=run_profile, unknown_driver_profile=unknown_driver_profile,
        locked_state=base / "locked-state", **_edge_cases(base, fifo))


def _edge_cases(base: Path, fifo: Path) -> dict[str, object]:
    """The fields of issue 20 §5's rows (state directories, FIFOs, NUL bytes, host names)."""
    loop = base / "loop"
    os.symlink(base / "loop-2", loop)
    os.symlink(loop, base / "loop-2")
    dangling = base / "dangling"
    os.symlink(base / "nowhere", dangling)
    profiles = {}
    for name, text in (("nul_state_profile", '[bridge]\nstate_dir = "state\\u0000x"\n'),
                       ("nul_host_profile", '[agent]\nhost = "local\\u0000host"\n'),
                       ("bad_host_profile", '[agent]\nhost = "a..b"\n'),
                       ("nul_ca_profile", '[agent]\nca_file = "ca\\u0000.crt"\n'),
                       ("nul_cert_profile", '[agent]\ncert_folder = "certs\\u0000x"\n')):
        profiles[name] = base / f"{name}.toml"
        profiles[name].write_text(text + '[[sensor]]\nname = "Pi SoC"\ndriver = "cpu_temperature"\n')
    (base / "short-token").write_text("short\n")
    (base / "huge-token").write_text("x" * 1_000_000)
    for name, token_file in (("token_missing_profile", base / "missing-token"), ("token_fifo_profile", fifo),
                             ("token_zero_profile", "/dev/zero"), ("token_dir_profile", base),
                             ("token_short_profile", base / "short-token"),
                             ("token_huge_profile", base / "huge-token")):
        profiles[name] = base / f"{name}.toml"
        profiles[name].write_text(f'[bridge]\nhttp_token_file = "{token_file}"\n'
                                  '[[sensor]]\nname = "Pi SoC"\ndriver = "cpu_temperature"\n')
    fifo_runtime = base / "fifo-runtime"
    fifo_runtime.mkdir()
    os.mkfifo(fifo_runtime / "status-0123456789ab.json")
    nested_runtime = base / "nested-runtime"
    nested_runtime.mkdir()
    (nested_runtime / "status-0123456789ab.json").write_text("[" * 10_000_000)
    return dict(loop=loop, dangling=dangling, long_path="/".join([str(base), *["d" * 200] * 30]),
                long_name=str(base / ("x" * 300)), non_utf8=str(base) + "/na\udcffme",
                fifo_runtime=fifo_runtime, nested_runtime=nested_runtime, **profiles)


@dataclass(frozen=True)
class Outcome:
    returncode: int | None  # None: still running when the guard or a "ready" line stopped it
    stdout: str
    stderr: str


def run_cli(argv: list[str], cwd: Path, guard_s: float) -> Outcome:
    """``python -m pibridge ARGV`` in ``cwd``. An emulator that starts serving (prints its
    "ready" line) is stopped at once: a bad-argument row must never get that far."""
    proc = subprocess.Popen([sys.executable, "-m", "pibridge", *argv], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    guard = threading.Timer(guard_s, proc.kill)
    guard.start()
    stopped = False
    out: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            out.append(line)
            if line.startswith("ready "):
                stopped = True
                proc.terminate()
                break
        rest, err = proc.communicate(timeout=guard_s)
    finally:
        guard.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    hung = proc.returncode is not None and proc.returncode < 0 and not stopped
    return Outcome(None if stopped or hung else proc.returncode, "".join(out) + rest, err)


@pytest.mark.parametrize(("command", "expect", "guard_s"), ROWS)
def test_bad_arguments_get_one_line_and_a_failure_status(command: str, expect: str, guard_s: float,
                                                         world: World, tmp_path: Path) -> None:
    outcome = run_cli(world.fill(command), tmp_path, guard_s)
    assert outcome.returncode is not None, f"still running (served or hung): {outcome.stderr[-500:]}"
    assert "Traceback" not in outcome.stderr, outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1, f"stderr is {len(lines)} lines, not one:\n{outcome.stderr}"
    assert outcome.returncode != 0, outcome.stdout
    assert expect in lines[0]


def _leaf_commands(parser: argparse.ArgumentParser, prefix: str = "") -> Iterator[str]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions:
        yield prefix.strip()
        return
    for name, child in actions[0].choices.items():
        yield from _leaf_commands(child, f"{prefix} {name}")


def test_every_command_has_rows() -> None:
    commands = set(_leaf_commands(build_parser()))
    covered = {" ".join(word for word in str(param.values[0]).split()[:2] if not word.startswith("-"))
               for param in ROWS}
    covered |= {words.split()[0] for words in covered if words}
    missing = sorted(command for command in commands if command not in covered)
    assert not missing, f"commands without rows in the hostile table: {missing}"


def test_bad_client_name_writes_nothing_outside_the_cert_folder(world: World, tmp_path: Path) -> None:
    """The row above checks the line; this checks the disk: nothing appears beside the folder."""
    (tmp_path / "run").mkdir()
    outcome = run_cli(world.fill("provision {agent} --cert-folder certs --client-name ../../evil"),
                      tmp_path / "run", GUARD_S)
    assert outcome.returncode == 1
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["run"]


#: Rows that need file systems of their own (a read-only one, a full one): issue 20 §5.
MOUNTED_ROWS = [
    pytest.param("run --simulate --profile {run_profile} --state-dir {ro}", "a read-only file system",
                 id="run-ro"),
    pytest.param("run --simulate --profile {run_profile} --state-dir {full}", "no space left on the device",
                 id="run-full"),
    pytest.param("run --simulate --profile {run_profile} --state-dir {nearly_full}",
                 "database or disk is full", id="run-nearly-full"),
    pytest.param("emulator serve --state-dir {ro} --port {free} --provision-port {free2}",
                 "a read-only file system", id="serve-ro"),
    pytest.param("emulator serve --state-dir {full} --port {free} --provision-port {free2}",
                 "No space left on device", id="serve-full"),
]


@pytest.fixture(scope="module")
def mounts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """Three 64 KiB tmpfs: read-only, full, and full but for two pages (room for a lock file,
    not for a database). Skipped where this process may not mount (not root, no CAP_SYS_ADMIN)."""
    base = tmp_path_factory.mktemp("mounts")
    mounted: list[Path] = []
    try:
        for name, options in (("ro", "ro,size=64k"), ("full", "size=64k"), ("nearly_full", "size=64k")):
            target = base / name
            target.mkdir()
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}): the read-only and full "
                            "file-system rows need one")
            mounted.append(target)
            if name != "ro":
                filler = target / "filler"
                fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
                try:
                    while os.write(fd, b"\0" * 4096):
                        pass
                except OSError:  # full
                    pass
                finally:
                    os.close(fd)
                if name == "nearly_full":
                    os.truncate(filler, filler.stat().st_size - 2 * 4096)
        yield {"ro": mounted[0], "full": mounted[1], "nearly_full": mounted[2]}
    finally:
        for target in mounted:
            subprocess.run(["umount", "-l", str(target)], check=False)


@pytest.mark.parametrize(("command", "expect"), MOUNTED_ROWS)
def test_state_dirs_on_read_only_and_full_file_systems(command: str, expect: str, world: World,
                                                       mounts: dict[str, Path], tmp_path: Path) -> None:
    marks = {"{ro}": "RO", "{full}": "FULL", "{nearly_full}": "NEARLY"}
    for placeholder, mark in marks.items():
        command = command.replace(placeholder, mark)
    paths = {"RO": mounts["ro"], "FULL": mounts["full"], "NEARLY": mounts["nearly_full"]}
    argv = [str(paths[word]) if word in paths else word for word in world.fill(command)]
    outcome = run_cli(argv, tmp_path, GUARD_S)
    assert outcome.returncode not in (None, 0), outcome.stdout
    assert "Traceback" not in outcome.stderr, outcome.stderr
    lines = outcome.stderr.splitlines()
    assert len(lines) == 1 and expect in lines[0], outcome.stderr
