"""mosquitto as the emulator's child processes, with generated configurations; and the front.

Two brokers, so that no client id used on one port can ever meet a session of the other (mosquitto
disconnects the older of two sessions with one client id, whichever listener each came in on).
Clients never reach mosquitto directly: the public ports are the front's (`pibridge.emulator.front`,
a child process too: TLS, the client-id rule, then bytes), which connects each client to its
broker's client socket. All sockets are in a directory of mode 0700 (`server._socket_dir`):

    broker     listener                  who connects              may publish              may subscribe
    provision  client socket (plain)     the front, for anonymous  /v1.0/createClient,      /certBack/#
                                         provisioning clients      /createConnector
    provision  core socket (TLS)         certificate CN = id       everything               everything
    api        client socket (plain)     the front, user = the     /v1.0/<user>/#           /v1.0/<user>/#
                                         client certificate's CN
    api        core socket (TLS)         certificate CN = id       everything               everything

Client ids and takeover (issue 20 §2; every listener has its own settings, ``per_listener_settings``):

- The core connects to each broker on its core socket with a certificate from the emulator's CA;
  ``use_identity_as_username`` and ``use_username_as_clientid`` make the certificate's CN its
  client id. The core's CN (`pki.CORE_IDENTITY`) starts with a control character, which mosquitto
  refuses in every client id a CONNECT carries: no client on any port can connect with the core's
  id.
- A provisioning client's id lives on the provision broker only: it cannot meet an API session.
- Between clients of one port, the front's id rule applies (an id belongs to its owner: the
  certificate's CN on the API port, the connection on the provision port); see its module notes.
  The logs that name ids (`pibridge.paths.open_private`) are the owner's alone.
- The client sockets trust the username the front puts in each CONNECT; only the front (and
  the owner of the state directory) can reach them.

mosquitto 2.0.11 notes: ``max_queued_messages 0`` would make every denied PUBLISH disconnect
its client (the quota check after a denial compares ``0 >= 0``), so a large number is used;
``SIGHUP`` re-reads the configuration and ACLs while open connections stay up.

Revocation must be effective before the deprovision answer goes out. The front checks the CRL
(mosquitto no longer sees client certificates). Each child handles SIGHUP asynchronously and
says when it is done, in a whole line of its output: mosquitto logs ``Reloading config.`` (level
*information*) in the step that re-reads its configuration; the front prints
`front.RELOAD_LINE` once new TLS contexts (new CRL) decide every later connection (or
`front.RELOAD_FAILED_LINE`). So each child's output goes through a pipe that a reader thread
copies to its log file, and `Broker.reload` waits for that child's line.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import fcntl
import logging
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pibridge import protocol as p
from pibridge.emulator.front import AUTO_ID_PREFIX, MAX_CONNECT_BYTES, FrontConfig, FrontListener, Role
from pibridge.emulator.front import RELOAD_FAILED_LINE as FRONT_RELOAD_FAILED_LINE
from pibridge.emulator.front import RELOAD_LINE as FRONT_RELOAD_LINE
from pibridge.paths import open_private

log = logging.getLogger(__name__)

#: Where mosquitto is looked for after PATH (Debian installs it in /usr/sbin, outside a user PATH).
FALLBACK_DIRS = ("/usr/sbin", "/usr/local/sbin")
#: Overrides the search: the path of the mosquitto binary to use.
MOSQUITTO_ENV = "PIBRIDGE_MOSQUITTO"
#: Messages mosquitto queues per client beyond those in flight (see module notes: not 0).
MAX_QUEUED_MESSAGES = 1_000_000
#: Largest MQTT packet mosquitto accepts (bytes, ``max_packet_size``; the core's own answers too,
#: so it leaves room for a listing of thousands of sensors): a 60 MB request never reaches the
#: core; up to `core.MAX_REQUEST_BYTES` requests are answered, larger ones 19 before parsing.
MAX_PACKET_BYTES = MAX_CONNECT_BYTES  # the front reads a CONNECT up to the same size
#: Seconds to wait for mosquitto to exit on SIGTERM before SIGKILL.
STOP_TIMEOUT_S = 5.0
#: Longest Unix socket path we use (sun_path holds 108 bytes including the NUL).
UNIX_PATH_MAX = 100
PR_SET_PDEATHSIG = 1
#: Seconds `Broker.reload` waits for a child to say it reloaded.
RELOAD_TIMEOUT_S = 10.0
#: What mosquitto logs (level information), as a whole line, right before it re-reads its
#: configuration.
RELOAD_LINE = b"Reloading config."
#: Pipe capacity asked for a child's output, so a stopped serve process (tests pause it) does not
#: block the child's logging as soon; the kernel may grant less.
LOG_PIPE_SIZE = 1 << 20
#: Lines of one child's run kept in memory, for the reason shown when it exits.
RUN_LINES_KEPT = 50
#: Lines of a child's output shown when it exits.
EXIT_LINES_SHOWN = 3
#: mosquitto's line prefix (``log_timestamp``: seconds since the epoch).
_TIMESTAMP = re.compile(rb"^\d+: ")
#: What mosquitto logs at every start as root (we ask for ``user root``): never the reason it exits.
_ROOT_WARNING = b"should not be run as root"
#: Usable TCP ports (0 is not one: mosquitto's ``listener 0`` opens a Unix socket).
PORT_MIN, PORT_MAX = 1, 65535


class BrokerError(Exception):
    """mosquitto cannot be found, started or reached (one line, for the CLI)."""


def find_mosquitto() -> str | None:
    """The mosquitto binary: $PIBRIDGE_MOSQUITTO, else PATH, else `FALLBACK_DIRS`."""
    override = os.environ.get(MOSQUITTO_ENV)
    if override:
        return override if os.access(override, os.X_OK) and os.path.isfile(override) else None
    search = os.pathsep.join([os.environ.get("PATH", ""), *FALLBACK_DIRS])
    return shutil.which("mosquitto", path=search)


def check_port(host: str, port: int) -> None:
    """Raise BrokerError unless the front could listen on host:port (bound with SO_REUSEADDR, as
    it does): a port outside 1..65535, a host that does not resolve, a port in use."""
    if not PORT_MIN <= port <= PORT_MAX:
        raise BrokerError(f"port {port} is not usable: choose one in {PORT_MIN}..{PORT_MAX}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as exc:
        raise BrokerError(f"cannot listen on {host!r}: it does not resolve ({exc})") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BrokerError(f"port {port} on {host} is already in use; choose another with "
                                  "--port/--provision-port") from None
            raise BrokerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


#: File stem of each broker's configuration and log in the state dir (the API broker's log keeps
#: the name it had when there was one broker).
_STEMS = {Role.API: "mosquitto", Role.PROVISION: "mosquitto-provision"}


@dataclass(frozen=True)
class BrokerConfig:
    """One broker: the socket the front brings its clients to (``role`` says which port's), and
    the core's private socket."""

    role: Role
    client_socket: Path
    core_socket: Path
    ca_file: Path
    cert_file: Path
    key_file: Path
    state_dir: Path

    @property
    def name(self) -> str:
        return f"mosquitto-{self.role.value}"

    @property
    def title(self) -> str:
        return f"mosquitto ({self.role.value} broker)"

    @property
    def config_file(self) -> Path:
        return self.state_dir / f"{_STEMS[self.role]}.conf"

    @property
    def log_file(self) -> Path:
        return self.state_dir / f"{_STEMS[self.role]}.log"

    def write(self) -> Path:
        """Write the configuration and its ACL file; returns the configuration's path."""
        tls = [f"cafile {self.ca_file}", f"certfile {self.cert_file}", f"keyfile {self.key_file}",
               "tls_version tlsv1.2"]
        lines = [
            f"# generated by pibridge emulator serve ({self.role.value} broker); rewritten at every start",
            "per_listener_settings true",
            "persistence false",
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
            "log_dest stderr",
            "log_type error", "log_type warning", "log_type notice",
            "log_type information",  # for the reload line (`RELOAD_LINE`)
            "connection_messages true",
            # a client sending a larger packet is disconnected (the core answers 19 above 256 KiB)
            f"max_packet_size {MAX_PACKET_BYTES}",
            # the ids mosquitto gives clients that sent none: the front refuses them from clients
            f"auto_id_prefix {AUTO_ID_PREFIX}",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to 'mosquitto', which cannot read our files
        # the clients' socket: the front connects every client here (module notes)
        if self.role is Role.PROVISION:
            acl = self.state_dir / "provision.acl"
            acl.write_text("# anonymous clients of the provisioning listener\n"
                           + "".join(f"topic write {t}\n" for t in p.PROVISION_TOPICS)
                           + f"topic read {p.CERT_BACK_FILTER}\n")
            lines += ["", f"listener 0 {self.client_socket}", "allow_anonymous true", f"acl_file {acl}"]
        else:
            acl = self.state_dir / "api.acl"
            acl.write_text(f"# user = certificate CN = clientId (set by the front)\n"
                           f"pattern readwrite {p.API_PREFIX}/%u/#\n")
            # the front always sets the username (mosquitto 2.0.11 refuses a username without a
            # password file when anonymous clients are not allowed); the ACL names users only
            lines += ["", f"listener 0 {self.client_socket}", "allow_anonymous true", f"acl_file {acl}"]
        # the core's private socket: no ACL; the certificate's CN is the client id (module notes)
        lines += ["", f"listener 0 {self.core_socket}", "allow_anonymous false", *tls,
                  "require_certificate true", "use_identity_as_username true",
                  "use_username_as_clientid true"]
        self.config_file.write_text("\n".join(lines) + "\n")
        return self.config_file


def _status(returncode: int) -> str:
    if returncode >= 0:
        return f"exit status {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when the serve process dies, however it
    dies. ``prctl`` is looked up here, in the parent: loading libraries in a forked child of a
    threaded process can deadlock, calling an already resolved function does not."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: the broker outlives a killed serve process
        return None

    def in_child() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    return in_child


class Broker:
    """One mosquitto child; `start`/`stop` may be repeated (restart in place). `FrontProcess` is
    the same kind of child with another command line, reload line and readiness check."""

    #: What the child prints, as a whole line after its timestamp, once a SIGHUP took effect
    #: (`reload` waits for it), and once a SIGHUP failed (None: it cannot say so).
    reload_line: bytes = RELOAD_LINE
    reload_failed_line: bytes | None = None

    def __init__(self, binary: str, config: BrokerConfig | FrontConfig) -> None:
        self.binary = binary
        self.config = config
        self._proc: subprocess.Popen[bytes] | None = None
        self._reloads = threading.Condition()
        self._reload_count = 0  # reload lines read so far (all runs)
        self._reload_failures = 0  # reload-failed lines read so far
        self._reload_lock = threading.Lock()  # one reload at a time: each waits for its own line
        self._log_ended: dict[subprocess.Popen[bytes], bool] = {}  # output reached EOF: it exited
        self._log_reader: threading.Thread | None = None
        self._run_lines: collections.deque[bytes] = collections.deque(maxlen=RUN_LINES_KEPT)
        self._last_proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.config.config_file)]

    def preexec(self) -> Callable[[], None] | None:
        """What runs in the child before exec: the parent-death signal."""
        return _die_with_parent()

    def start(self) -> None:
        """Start the child (call from the main thread: the parent-death signal is per thread)."""
        self.config.write()
        try:
            proc = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=self.preexec(),
                start_new_session=True)
        except OSError as exc:
            raise BrokerError(f"cannot start {self.binary}: {exc}") from exc
        assert proc.stdout is not None
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, LOG_PIPE_SIZE)
        self._proc = self._last_proc = proc
        self._log_ended[proc] = False
        self._run_lines = collections.deque(maxlen=RUN_LINES_KEPT)
        self._log_reader = threading.Thread(target=self._copy_log, args=(proc, self._run_lines),
                                            name=f"{self.config.name}-log", daemon=True)
        self._log_reader.start()

    def _copy_log(self, proc: subprocess.Popen[bytes], run_lines: collections.deque[bytes]) -> None:
        """Copy mosquitto's output to the log file, counting reload lines; ends at mosquitto's exit.
        A failing write (a full disk) drops lines, says so once, and never ends the reading: the
        reload lines must still be counted (`reload`)."""
        assert proc.stdout is not None
        out = None
        writing = True
        try:
            for line in proc.stdout:
                run_lines.append(line)
                said = _TIMESTAMP.sub(b"", line).rstrip(b"\r\n")  # whole lines only: a line that
                if said in (self.reload_line, self.reload_failed_line):  # quotes one is not one
                    with self._reloads:
                        if said == self.reload_line:
                            self._reload_count += 1
                        else:
                            self._reload_failures += 1
                        self._reloads.notify_all()
                try:
                    if out is None:  # reopened after a failure
                        out = open_private(self.config.log_file)
                    out.write(line)
                except OSError as exc:
                    if writing:
                        log.warning("cannot write %s (%s): %s's log lines are dropped until it works "
                                    "again", self.config.log_file, exc.strerror or exc, self.config.title)
                    writing = False
                    if out is not None:
                        with contextlib.suppress(OSError):
                            out.close()
                        out = None
                    continue
                if not writing:
                    log.warning("writing %s works again", self.config.log_file)
                    writing = True
        except (OSError, ValueError) as exc:  # the pipe itself failed: the child is lost to us
            log.warning("reading the output of %s failed: %s", self.config.title, exc)
        finally:
            if out is not None:
                with contextlib.suppress(OSError):
                    out.close()
            with proc.stdout, self._reloads:  # wake a reload waiting on a mosquitto that is gone
                self._log_ended[proc] = True
                self._reloads.notify_all()

    def reload(self, timeout: float = RELOAD_TIMEOUT_S) -> bool:
        """SIGHUP: re-read configuration and files (mosquitto: its ACLs; the front: certificates
        and CRL; open connections stay). Returns once the child said it reloaded (True), or False
        when it is not running, exited, said the reload failed or said nothing within
        ``timeout`` seconds. A child started later reads the files anyway."""
        with self._reload_lock:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                return False
            with self._reloads:
                seen, failed = self._reload_count, self._reload_failures
                proc.send_signal(signal.SIGHUP)
                self._reloads.wait_for(lambda: self._reload_count > seen or self._reload_failures > failed
                                       or self._log_ended[proc], timeout)
                return self._reload_count > seen

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def exit_reason(self) -> str:
        """Why the last mosquitto run ended, in one line: its exit status and the error lines it
        printed in that run (else its last lines), never lines of an earlier run."""
        proc, reader = self._last_proc, self._log_reader
        if reader is not None and proc is not None and proc.poll() is not None:
            reader.join(timeout=1.0)  # mosquitto exited: let the reader take its last lines
        lines = [_TIMESTAMP.sub(b"", line).strip() for line in list(self._run_lines)]
        lines = [line for line in lines if line and _ROOT_WARNING not in line]
        errors = [line for line in lines if b"Error" in line]
        shown = (errors or lines)[:EXIT_LINES_SHOWN] if errors else lines[-EXIT_LINES_SHOWN:]
        status = "still running"
        if proc is not None and proc.returncode is not None:
            status = _status(proc.returncode)
        text = " | ".join(line.decode(errors="replace") for line in shown)
        return f"{status}: {text}" if text else f"{status}, no output (log: {self.config.log_file})"

    def wait_ready(self, timeout: float) -> None:
        """Return once mosquitto accepts connections on its client socket."""
        assert isinstance(self.config, BrokerConfig)
        path = self.config.client_socket

        def attempt() -> str | None:
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.connect(str(path))
            except OSError as exc:
                return f"does not listen ({exc.strerror or exc})"
            return None
        self._poll_ready(f"mosquitto on {path}", attempt, time.monotonic() + timeout, timeout)

    def _poll_ready(self, what: str, attempt: Callable[[], str | None], deadline: float,
                    timeout: float) -> None:
        """Repeat ``attempt`` (None: ready, else what is wrong) until it succeeds; a child that
        exits meanwhile, or ``deadline``, is a `BrokerError`."""
        while True:
            if not self.alive():
                raise BrokerError(f"{self.config.title} exited during startup ({self.exit_reason()})")
            problem = attempt()
            if problem is None:
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"{what} {problem} after {timeout:g} s")
            time.sleep(0.01)  # polling a starting process: nothing to wait on


class FrontProcess(Broker):
    """The front (`pibridge.emulator.front`) as a child process: ``python -m`` with this
    interpreter; ready once both public ports answer."""

    reload_line = FRONT_RELOAD_LINE
    reload_failed_line = FRONT_RELOAD_FAILED_LINE

    def __init__(self, config: FrontConfig) -> None:
        super().__init__(sys.executable, config)

    def command(self) -> list[str]:
        return [self.binary, "-m", "pibridge.emulator.front", str(self.config.config_file)]

    def preexec(self) -> Callable[[], None] | None:
        """The parent-death signal, and SIGHUP blocked: a revocation may signal the front before
        its start-up installed the handler (which SIGHUP's default action would kill); the front
        unblocks it once it can reload, and a pending one then runs."""
        die = _die_with_parent()

        def in_child() -> None:
            if die is not None:
                die()
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})
        return in_child

    def wait_ready(self, timeout: float) -> None:
        """Return once every public port answers: a verified TLS handshake on the provision port, a
        TLS connection on the API port (which then wants a client certificate)."""
        assert isinstance(self.config, FrontConfig)
        deadline = time.monotonic() + timeout
        context = ssl.create_default_context(cafile=str(self.config.ca_file))
        for listener in self.config.listeners:
            def attempt(listener: FrontListener = listener) -> str | None:
                try:
                    with socket.create_connection((listener.host, listener.port), timeout=1.0) as raw:
                        if listener.role is Role.PROVISION:
                            with context.wrap_socket(raw, server_hostname="localhost"):
                                pass
                except (ConnectionRefusedError, TimeoutError):
                    return "does not answer"
                except OSError as exc:  # ssl.SSLError included: e.g. a server certificate we cannot verify
                    return f"fails the TLS check ({exc})"
                return None
            self._poll_ready(f"the emulator on {listener.host}:{listener.port}", attempt, deadline, timeout)
