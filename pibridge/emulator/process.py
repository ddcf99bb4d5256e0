"""The emulator as a child process (``python -m pibridge emulator serve``), driven from Python.

`EmulatorProcess` is what tests, benchmarks and the demo use to run the REAL emulator (its own
process, its mosquitto children and front, real TLS); no pytest needed (`pibridge.testing` wraps
it in fixtures)::

    emu = EmulatorProcess(Path("/tmp/agent"))    # state (CA, database, logs) in that directory
    emu.start()                                  # free ports, waits for the ready line
    ...                                          # emu.host / emu.port / emu.provision_port / emu.ca_file
    emu.stop()                                   # graceful: everything acknowledged is committed
    emu.start()                                  # again, on the SAME ports and state: clients reconnect
    with emu.paused_core():                      # the core stops answering; the broker stays up
        ...
    emu.restart_broker()                         # mosquitto restarts in place: every connection drops
    emu.wipe(); emu.dump(); emu.stop()

Lifecycle rules:

- `start` picks two free ports the first time (retried if one is taken in between) and keeps them:
  a later `start` after `stop` reuses them and the same state directory, so a client's settings,
  certificate and registered ids stay valid across an outage of any length. If another process
  took one of the ports meanwhile, `start` raises `EmulatorError` (nothing retried on other ports).
- `stop` sends SIGTERM (resuming a paused core first) and waits; SIGKILL after `STOP_TIMEOUT_S`.
- `pause_core` stops the serve process (SIGSTOP): requests are still accepted by the broker but
  nothing answers them until `resume_core`; returns once the process stopped.
- The serve process's stderr (its log) is appended to ``output_file`` (default ``serve.log`` in the
  state directory); errors quote its tail.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from pibridge import mqtt
from pibridge import protocol as p

#: Seconds to wait for the ready line (a first start creates two RSA keys).
START_TIMEOUT_S = 30.0
#: Seconds to wait for a graceful stop before SIGKILL.
STOP_TIMEOUT_S = 15.0
#: Seconds for restart/wipe acknowledgements and provisioning.
COMMAND_TIMEOUT_S = 20.0
#: How often a first start is retried when a freshly chosen free port got taken meanwhile.
PORT_RETRIES = 3
#: Characters of the serve log quoted in an `EmulatorError`.
LOG_TAIL_CHARS = 2000
#: Default name of the serve process's log, in the state directory.
SERVE_LOG_NAME = "serve.log"
#: How mosquitto's log names the core's connection (its client id).


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host`` (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmulatorError(RuntimeError):
    """The emulator did not start, answer a command, or stop as asked."""


class EmulatorProcess:
    """One ``pibridge emulator serve`` child with its state in ``state_dir``; ports 0 = choose free
    ones at the first `start`."""

    def __init__(self, state_dir: Path, *, host: str = "127.0.0.1", port: int = 0, provision_port: int = 0,
                 strict_ids: bool = False, inject_errors: Sequence[tuple[int, float]] = (),
                 inject_answer_faults: Sequence[str] = (),
                 seed: int | None = None, output_file: Path | None = None, http: str | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.host = host
        self.port = port
        self.provision_port = provision_port
        self.strict_ids = strict_ids
        self.inject_errors = list(inject_errors)
        #: ``"drop:0.01"``, ``"dup:0.02"``, ``"delay:0.005:1.5"``, ``"reorder:0.05"``,
        #: ``"redeliver:0.01"`` (see `pibridge.emulator.faults`); applied from the next `start` on
        self.inject_answer_faults = list(inject_answer_faults)
        self.seed = seed
        self.output_file = Path(output_file) if output_file else self.state_dir / SERVE_LOG_NAME
        self.ready_line = ""
        self.http = http               #: ``--http``: serve the dashboard here (its URL: ``dashboard_url``)
        self.dashboard_url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._paused = False

    # -- attributes ----------------------------------------------------------------------------
    @property
    def ca_file(self) -> Path:
        """The ``CaFile`` clients trust."""
        return self.state_dir / "ca.crt"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def provision_endpoint(self) -> mqtt.Endpoint:
        return mqtt.Endpoint(self.host, self.provision_port, mqtt.TlsFiles(self.ca_file))

    def api_endpoint(self, cert_file: Path, key_file: Path) -> mqtt.Endpoint:
        tls = mqtt.TlsFiles(self.ca_file, Path(cert_file), Path(key_file))
        return mqtt.Endpoint(self.host, self.port, tls)

    # -- lifecycle -----------------------------------------------------------------------------
    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "pibridge", "emulator", "serve", "--state-dir", str(self.state_dir),
               "--host", self.host, "--port", str(self.port), "--provision-port", str(self.provision_port)]
        if self.strict_ids:
            cmd.append("--strict-ids")
        for code, share in self.inject_errors:
            cmd += ["--inject-error", f"{int(code)}:{share}"]
        for fault in self.inject_answer_faults:
            cmd += ["--inject-answer-fault", fault]
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        if self.http:
            cmd += ["--http", self.http]
        return cmd

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start and wait up to ``timeout`` s for the ready line; on the ports chosen before, if any.
        Does nothing when already running."""
        if self.running:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        keep_ports = bool(self.port and self.provision_port)
        for attempt in range(PORT_RETRIES):
            if not keep_ports:
                self.port, self.provision_port = free_port(self.host), free_port(self.host)
                while self.provision_port == self.port:
                    self.provision_port = free_port(self.host)
            try:
                self._launch(timeout)
                return
            except EmulatorError:
                if keep_ports or attempt == PORT_RETRIES - 1 or "already in use" not in self.log_tail():
                    raise

    def _launch(self, timeout: float) -> None:
        self._lines = queue.SimpleQueue()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        from pibridge.paths import open_private

        with open_private(self.output_file) as err:
            self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=err, text=True, env=env)
        threading.Thread(target=self._read, args=(self._proc, self._lines), name="emulator-stdout",
                         daemon=True).start()
        self._paused = False
        try:
            self.ready_line = self._expect("ready", timeout)
            if self.http:
                self.dashboard_url = self._expect("dashboard", timeout).split()[1]
        except EmulatorError:
            self._terminate()
            raise

    @staticmethod
    def _read(proc: subprocess.Popen[str], lines: queue.SimpleQueue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.strip())
        lines.put(None)

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        """The end of the serve process's log (stderr)."""
        try:
            return self.output_file.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _expect(self, word: str, timeout: float) -> str:
        """Wait for the next stdout line starting with ``word``."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise EmulatorError(f"emulator: no '{word}' within {timeout:g} s; "
                                    f"log: {self.log_tail()}") from None
            if line is None:
                status = self._proc.wait() if self._proc else "?"
                raise EmulatorError(f"emulator exited ({status}); log: {self.log_tail()}")
            if line.startswith(word):
                return line

    def _signal(self, sig: int) -> None:
        if not self.running:
            raise EmulatorError("the emulator is not running")
        assert self._proc is not None
        self._proc.send_signal(sig)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            if self._paused:
                proc.send_signal(signal.SIGCONT)
                self._paused = False
            proc.terminate()
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()  # mosquitto follows through its parent-death signal
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def stop(self) -> int | None:
        """Stop gracefully (SIGTERM; resumes a paused core first). Returns the exit status (None:
        was not started). Ports and state stay for a later `start`."""
        proc = self._proc
        self._terminate()
        return proc.returncode if proc is not None else None

    def wait(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` s for the serve process to exit by itself; its exit status, or
        None if it still runs (or was never started)."""
        proc = self._proc
        if proc is None:
            return None
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def restart_broker(self) -> None:
        """Restart both mosquittos and the front in place (same ports and state); returns once
        it is ready again. Every client connection drops, and the front forgets which client
        owned which id (mosquitto forgets their sessions too)."""
        self._signal(signal.SIGUSR1)
        self._expect("ready", COMMAND_TIMEOUT_S)

    def pause_core(self) -> None:
        """The core stops answering (the serve process is stopped); the broker stays up.

        Returns once the process has actually stopped (``waitpid`` with WUNTRACED reports it):
        SIGSTOP is asynchronous, and a request published right after it must not be answered."""
        self._signal(signal.SIGSTOP)
        assert self._proc is not None
        _, status = os.waitpid(self._proc.pid, os.WUNTRACED)
        if not os.WIFSTOPPED(status):
            raise EmulatorError(f"the emulator exited instead of pausing (status {status})")
        self._paused = True

    def resume_core(self) -> None:
        self._signal(signal.SIGCONT)
        self._paused = False

    @contextlib.contextmanager
    def paused_core(self) -> Iterator[None]:
        """The core paused inside the block, resumed after it (also on an exception)."""
        self.pause_core()
        try:
            yield
        finally:
            if self.running:
                self.resume_core()

    def core_client_id(self) -> str:
        """The MQTT client id of the core's connections, once mosquitto's log (which only the owner
        may read) shows it connected: its certificate's CN, an id no client can send."""
        from pibridge.emulator.pki import CORE_IDENTITY

        try:
            text = (self.state_dir / "mosquitto.log").read_text(errors="replace")
        except OSError as exc:
            raise EmulatorError(f"cannot read mosquitto's log: {exc}") from None
        if f" as {CORE_IDENTITY} " not in text:
            raise EmulatorError("the core's client id is not in mosquitto's log")
        return CORE_IDENTITY

    def private_endpoint(self, *, provision: bool = False, as_core: bool = False) -> mqtt.Endpoint:
        """A connection on a broker's private socket (no ACL; the API broker's, or with
        ``provision`` the provision broker's), where the certificate's CN is the client id:
        a fresh observer identity (CN ``pibridge-observer-…``, issued by the emulator's CA), or
        with ``as_core`` the core's own (connecting with it takes over the core's session)."""
        from pibridge.emulator.pki import Authority
        from pibridge.emulator.server import (
            CORE_SOCKET_NAME,
            PROVISION_CORE_SOCKET_NAME,
            SOCKET_DIR_NAME,
            core_endpoint,
        )

        state = self.state_dir.resolve()
        # the ready line names the sockets' directory (a temp dir for a state dir too deep for them)
        _, said, sockets = self.ready_line.rstrip("\n").rpartition(" sockets=")  # the last field
        socket_dir = Path(sockets) if said else state / SOCKET_DIR_NAME
        socket_path = socket_dir / (PROVISION_CORE_SOCKET_NAME if provision else CORE_SOCKET_NAME)
        authority = Authority.existing(state)
        if as_core:
            cert, key = authority.paths.core_cert, authority.paths.core_key
        else:
            folder = state / "observers"
            folder.mkdir(mode=0o700, exist_ok=True)
            name = mqtt.new_client_id("pibridge-observer")
            cert, key = folder / f"{name}.crt", folder / f"{name}.key"
            authority.issue_private_identity(name, key, cert)
        return core_endpoint(socket_path, authority.paths.ca_cert, cert, key)

    def drop_core_session(self, timeout: float = COMMAND_TIMEOUT_S) -> None:
        """The core's MQTT session ends for a moment while every client stays connected (as when
        mosquitto's keepalive check drops a core that hung too long): a connection with the core's
        own certificate on the API broker's private socket takes over the core's session, then
        leaves; the core reconnects by itself (to both brokers). Requests routed to the core in
        between are lost (clean session). Works while the core is paused."""
        session = mqtt.MqttSession(self.private_endpoint(as_core=True), client_id=mqtt.new_client_id("t"),
                                   on_message=lambda t, m: None)
        session.open(timeout)
        session.close()

    def wipe(self) -> None:
        """Delete every sensor, metric and value; clients and CA stay."""
        if not self.running:
            from pibridge.emulator.server import wipe

            wipe(self.state_dir)
            return
        self._signal(signal.SIGUSR2)
        self._expect("wiped", COMMAND_TIMEOUT_S)

    def dump(self) -> dict[str, Any]:
        """The ``emulator dump`` JSON, parsed (everything acknowledged so far is in it)."""
        from pibridge.emulator.store import DB_NAME, dump

        return dump(self.state_dir / DB_NAME)

    def error_reports(self) -> list[dict[str, Any]]:
        from pibridge.emulator.store import DB_NAME, error_reports

        return error_reports(self.state_dir / DB_NAME)

    # -- clients -------------------------------------------------------------------------------
    def provision(self, csr_pem: bytes, topic: str = p.PROVISION_TOPIC,
                  timeout: float = COMMAND_TIMEOUT_S) -> tuple[str, bytes]:
        """Publish a CSR on the provisioning port; returns ("cert", PEM) or ("error", JSON bytes)."""
        digest = hashlib.sha256(csr_pem).hexdigest()
        ok, err = p.CERT_BACK_TOPIC.format(hash=digest), p.CERT_BACK_ERROR_TOPIC.format(hash=digest)
        answers: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()

        def on_message(t: str, payload: bytes) -> None:
            if t == ok:
                answers.put(("cert", payload))
            elif t == err:
                answers.put(("error", payload))

        session = mqtt.MqttSession(self.provision_endpoint(), client_id=mqtt.new_client_id("pibridge-test"),
                                   on_message=on_message)
        session.open(timeout)
        try:
            session.subscribe([ok, err], timeout=timeout)
            session.publish_and_wait(topic, csr_pem, timeout=timeout)
            try:
                return answers.get(timeout=timeout)
            except queue.Empty:
                raise EmulatorError(f"no provisioning answer within {timeout:g} s") from None
        finally:
            session.close()

    def issue_client_certificate(self, directory: Path) -> tuple[str, Path, Path]:
        """Provision a new client through the real provisioning port: (clientId, cert path, key path)."""
        from pibridge.emulator.pki import certificate_cn, make_client_key_and_csr

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        key_pem, csr_pem = make_client_key_and_csr()
        kind, payload = self.provision(csr_pem)
        if kind != "cert":
            raise EmulatorError(f"provisioning failed: {payload!r}")
        cid = certificate_cn(payload)
        key_path, cert_path = directory / f"{cid}-key.pem", directory / f"{cid}-cert.pem"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(key_pem)
        cert_path.write_bytes(payload)
        return cid, cert_path, key_path
