"""pytest plugin: the REAL agent emulator (``python -m pibridge emulator serve``) per test.

Enable with ``pytest_plugins = ["pibridge.testing"]`` in ``tests/conftest.py``. Fixtures:

- ``emulator``: a running default `Emulator` (implicit creation on, no injected errors).
- ``emulator_factory(strict_ids=False, inject_errors=(), seed=None)``: more of them, variants.

Both stop everything at teardown (the serve process and its mosquitto child).
`Emulator.issue_client_certificate` provisions a client through the real provisioning port,
without pibridge's agent client library.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pibridge import mqtt
from pibridge import protocol as p

#: Seconds to wait for the ready line (first start creates two RSA keys).
START_TIMEOUT_S = 30.0
#: Seconds to wait for a graceful stop before SIGKILL.
STOP_TIMEOUT_S = 15.0
#: Seconds for restart/wipe acknowledgements and provisioning.
COMMAND_TIMEOUT_S = 20.0
#: How often a start is retried when a freshly chosen free port got taken meanwhile.
PORT_RETRIES = 3


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class EmulatorError(RuntimeError):
    pass


class Emulator:
    """One emulator process on free ports with its state in ``base_dir/state``."""

    def __init__(self, base_dir: Path, *, strict_ids: bool = False,
                 inject_errors: Sequence[tuple[int, float]] = (), seed: int | None = None,
                 host: str = "127.0.0.1") -> None:
        self.base_dir = Path(base_dir)
        self.state_dir = self.base_dir / "state"
        self.host = host
        self.port = 0
        self.provision_port = 0
        self.strict_ids = strict_ids
        self.inject_errors = list(inject_errors)
        self.seed = seed
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._paused = False
        self.stderr_file = self.base_dir / "serve.stderr"

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
        if self.seed is not None:
            cmd += ["--seed", str(self.seed)]
        return cmd

    def start(self) -> None:
        """Start (or start again, on the same ports once chosen) and wait for the ready line."""
        if self.running:
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        keep_ports = bool(self.port)
        for attempt in range(PORT_RETRIES):
            if not keep_ports:
                self.port, self.provision_port = free_port(self.host), free_port(self.host)
                while self.provision_port == self.port:
                    self.provision_port = free_port(self.host)
            try:
                self._launch()
                return
            except EmulatorError:
                if keep_ports or attempt == PORT_RETRIES - 1 or "already in use" not in self._stderr():
                    raise

    def _launch(self) -> None:
        self._lines = queue.SimpleQueue()
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.stderr_file, "a") as err:
            self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=err, text=True, env=env)
        threading.Thread(target=self._read, args=(self._proc, self._lines), daemon=True).start()
        self._paused = False
        try:
            self._expect("ready", START_TIMEOUT_S)
        except EmulatorError:
            self._terminate()
            raise

    @staticmethod
    def _read(proc: subprocess.Popen[str], lines: queue.SimpleQueue[str | None]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.strip())
        lines.put(None)

    def _stderr(self) -> str:
        try:
            return self.stderr_file.read_text(errors="replace")
        except OSError:
            return ""

    def _expect(self, word: str, timeout: float) -> str:
        """Wait for the next stdout line starting with ``word``."""
        while True:
            try:
                line = self._lines.get(timeout=timeout)
            except queue.Empty:
                raise EmulatorError(f"emulator: no '{word}' within {timeout:g} s; stderr: "
                                    f"{self._stderr()[-2000:]}") from None
            if line is None:
                raise EmulatorError(f"emulator exited ({self._proc.wait() if self._proc else '?'}); "
                                    f"stderr: {self._stderr()[-2000:]}")
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
        """Stop gracefully (SIGTERM; resumes a paused core first). Returns the exit status."""
        proc = self._proc
        self._terminate()
        return proc.returncode if proc is not None else None

    def restart_broker(self) -> None:
        """Restart mosquitto in place (same ports and state); returns once it is ready again.
        Every client connection drops."""
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


class ApiClient:
    """A minimal raw API client for tests: one mTLS session, every reply topic of its clientId
    subscribed, received messages in a queue. Not the pibridge client library."""

    def __init__(self, emulator: Emulator, cid: str, cert: Path, key: Path,
                 filters: Sequence[str] | None = None) -> None:
        self.cid = cid
        self.messages: queue.SimpleQueue[tuple[str, bytes]] = queue.SimpleQueue()
        self.session = mqtt.MqttSession(emulator.api_endpoint(cert, key),
                                        client_id=mqtt.new_client_id("pibridge-test"),
                                        on_message=lambda t, m: self.messages.put((t, m)))
        self.session.open()
        self.session.subscribe(list(filters) if filters is not None else p.client_subscriptions(cid))

    def base(self) -> str:
        return p.BASE.format(cid=self.cid)

    def send(self, topic: str, payload: bytes | str | object = b"{}") -> None:
        if not isinstance(payload, bytes | str):
            payload = json.dumps(payload)
        self.session.publish_and_wait(topic, payload)

    def next(self, timeout: float = 10.0) -> tuple[str, bytes]:
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message within {timeout:g} s") from None

    def request(self, topic: str, payload: bytes | str | object = b"{}",
                timeout: float = 10.0) -> tuple[str, bytes]:
        """Send and return the first message that arrives (livedata skipped)."""
        self.send(topic, payload)
        while True:
            t, m = self.next(timeout)
            if not t.endswith("/livedata"):
                return t, m

    def close(self) -> None:
        self.session.close()


@pytest.fixture
def emulator_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Emulator]]:
    """``emulator_factory(strict_ids=False, inject_errors=[(1, 0.2)], seed=7)`` → a started `Emulator`."""
    made: list[Emulator] = []

    def make(**kwargs: Any) -> Emulator:
        emulator = Emulator(tmp_path_factory.mktemp("emulator"), **kwargs)
        made.append(emulator)
        emulator.start()
        return emulator

    yield make
    for emulator in made:
        with contextlib.suppress(Exception):
            emulator.stop()


@pytest.fixture
def emulator(emulator_factory: Callable[..., Emulator]) -> Emulator:
    """A running emulator with default behaviour, stopped after the test."""
    return emulator_factory()
