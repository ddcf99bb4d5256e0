"""The client under faults and hostile input (issue 8 §2, §3, §4, §6 for the client side):

- an identity on disk is never destroyed: a failure at every single step of writing a new set
  leaves the previous one readable and matching; concurrent `pibridge provision --override`
  processes never leave a key beside another key's certificate, and readers meanwhile only see
  whole sets; a failed ``--override`` keeps the identity that works;
- the client follows the credentials on disk (a new clientId after an override beside it, said
  on the "up" event) and says when they are gone instead of retrying for ever;
- `smart` provisioning with a slow agent, bad timeouts, hosts that do not resolve, the API port
  given as the provisioning port, a CA file that is garbage: each its own clear error;
- `TVCMI_client` refuses bad input with the SDK's errors.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import self_signed, settings_for

from pibridge.agent import (
    AgentClient,
    AgentConnectionError,
    AgentSettings,
    ConfigurationError,
    ConnectionErrorKind,
    ConnectionEvent,
    CredentialFiles,
    ProvisioningError,
    ProvisioningMode,
    provision,
    request_certificate,
)
from pibridge.agent.x509 import certificate_matches_key, make_key_and_csr
from pibridge.testing import Emulator
from pibridge.tvcmi import InputError, TVCMI_client

WAIT_S = 20.0
CLI_TIMEOUT_S = 120.0
OLD_ID, NEW_ID = "0" * 31 + "1", "0" * 31 + "2"


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "pibridge", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _flags(emulator: Emulator, folder: Path) -> list[str]:
    return ["--host", emulator.host, "--port", str(emulator.port), "--provision-port",
            str(emulator.provision_port), "--ca-file", str(emulator.ca_file), "--cert-folder", str(folder)]


def _pair_matches(key_file: Path, cert_file: Path) -> bool:
    return certificate_matches_key(cert_file.read_bytes(), key_file.read_bytes())


# --- §2: every step of a store can fail; the previous identity survives each -----------------------
@pytest.fixture(scope="module")
def two_sets() -> tuple[tuple[bytes, bytes, bytes], tuple[bytes, bytes, bytes]]:
    """(key, csr, certificate) for OLD_ID and for NEW_ID."""
    sets = []
    for client_id in (OLD_ID, NEW_ID):
        key_pem, csr_pem = make_key_and_csr("pibridge")
        sets.append((key_pem, csr_pem, self_signed(key_pem, client_id)))
    return sets[0], sets[1]


#: The os functions a store goes through to change the disk; the fault injector fails the n-th call.
_OS_CALLS = ("open", "mkdir", "fsync", "rename", "replace", "symlink", "link", "unlink", "rmdir")


@contextlib.contextmanager
def _failing_call(number: int | None) -> Iterator[list[str]]:
    """Patch `_OS_CALLS` so that call ``number`` (0-based, counted across all of them) raises EIO;
    yields the names of the calls made (``None``: count only). ``fsync`` does nothing meanwhile:
    durability is not what this checks, and a thousand real flushes make the test slow."""
    calls: list[str] = []
    originals = {name: getattr(os, name) for name in _OS_CALLS}

    def wrap(name: str) -> Callable[..., Any]:
        original = originals[name]

        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            if number is not None and len(calls) - 1 == number:
                raise OSError(errno.EIO, f"injected failure of os.{name}")
            return None if name == "fsync" else original(*args, **kwargs)
        return call

    for name in _OS_CALLS:
        setattr(os, name, wrap(name))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(os, name, original)


def _start(folder: Path, layout: str, old: tuple[bytes, bytes, bytes]) -> CredentialFiles:
    files = CredentialFiles(folder, "pibridge")
    if layout == "sdk":  # the plain files the official SDK writes
        folder.mkdir(mode=0o700)
        files.key.write_bytes(old[0])
        files.csr.write_bytes(old[1])
        files.cert.write_bytes(old[2])
    else:
        files.store(*old, OLD_ID)
    return files


@pytest.mark.parametrize("layout", ["sdk", "pibridge"])
def test_a_failure_at_any_step_of_a_store_keeps_the_previous_identity(
        layout: str, two_sets: tuple[tuple[bytes, bytes, bytes], ...], tmp_path: Path) -> None:
    old, new = two_sets
    with _failing_call(None) as calls:
        _start(tmp_path / "count", layout, old).store(*new, NEW_ID)
    steps = len(calls)
    assert steps > 10
    failed = 0
    for step in range(steps):
        with _failing_call(None):
            files = _start(tmp_path / f"step-{step}", layout, old)
        try:
            with _failing_call(step):
                files.store(*new, NEW_ID)
        except (OSError, ProvisioningError):
            failed += 1
            expected = old, OLD_ID  # a store that fails changed nothing
        else:
            expected = new, NEW_ID  # the failure hit housekeeping after the switch (or a fallback)
        # our reader and the SDK's (its plain file names) both see one whole, matching set
        (key_pem, _, cert_pem), client_id = expected
        credentials = files.snapshot()  # (the known sets match: bytes suffice, no slow key check)
        assert credentials.client_id == client_id, f"step {step} ({calls[step]})"
        assert (credentials.key_file.read_bytes(), credentials.cert_file.read_bytes()) == (key_pem, cert_pem)
        assert files.cert.read_bytes() == cert_pem and files.key.read_bytes() == key_pem
        # and the next store, without faults, cleans up and switches
        with _failing_call(None):
            files.store(*new, NEW_ID)
        assert files.client_id() == NEW_ID and files.key.read_bytes() == new[0]
        assert not [p for p in files.generations.iterdir() if p.name.endswith(".tmp")]
    assert failed >= 10  # every step up to the switch
    assert files.check_pair() == NEW_ID


def test_generations_are_collected_and_names_stay_links(two_sets: tuple[tuple[bytes, bytes, bytes], ...],
                                                        tmp_path: Path) -> None:
    old, new = two_sets
    files = CredentialFiles(tmp_path / "certs", "pibridge")
    for _ in range(3):
        files.store(*old, OLD_ID)
        files.store(*new, NEW_ID)
    assert sorted(p.name for p in files.generations.iterdir()) == ["5", "6", "current"]
    assert all(path.is_symlink() for path in (files.key, files.csr, files.cert))
    assert files.remove() == [files.csr, files.key, files.cert]
    assert sorted(p.name for p in files.folder.iterdir()) == []
    with pytest.raises(ProvisioningError, match="run `pibridge provision` first"):
        files.snapshot()


# --- §2: the key must match the certificate before "already provisioned" ---------------------------
def test_keep_checks_that_the_key_belongs_to_the_certificate(emulator: Emulator, tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path / "certs")
    provision(settings)
    files = CredentialFiles(settings.cert_folder, settings.client_name)
    other = settings_for(emulator, tmp_path / "other")
    provision(other)
    files.key.write_bytes(CredentialFiles(other.cert_folder, other.client_name).key.read_bytes())
    with pytest.raises(ProvisioningError, match=re.escape(f"key {files.key} does not belong to certificate")):
        provision(settings, ProvisioningMode.KEEP)
    files.key.write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    with pytest.raises(ProvisioningError, match=re.escape(f"key {files.key} is not an unencrypted PEM")):
        provision(settings, ProvisioningMode.SMART)


# --- §2: concurrent overrides, with a reader watching --------------------------------------------
def test_concurrent_overrides_never_pair_a_key_with_another_certificate(emulator: Emulator,
                                                                        tmp_path: Path) -> None:
    folder = tmp_path / "certs"
    files = CredentialFiles(folder, "pibridge")
    provision(settings_for(emulator, folder))
    stop = threading.Event()
    seen: list[tuple[str, bool]] = []
    crashes: list[BaseException] = []

    def read_while_they_write() -> None:
        try:
            while not stop.is_set():
                credentials = files.snapshot()
                try:
                    matches = _pair_matches(credentials.key_file, credentials.cert_file)
                except FileNotFoundError:  # collected after two more switches: read again
                    continue
                seen.append((credentials.client_id, matches))
        except BaseException as exc:  # a reader that crashed would otherwise pass silently
            crashes.append(exc)

    reader = threading.Thread(target=read_while_they_write)
    reader.start()
    try:
        processes = [_cli("provision", "--override", *_flags(emulator, folder)) for _ in range(4)]
        outputs = [process.communicate(timeout=CLI_TIMEOUT_S) for process in processes]
    finally:
        stop.set()
        reader.join(WAIT_S)
    assert not reader.is_alive()
    assert crashes == []
    assert [p.returncode for p in processes] == [0, 0, 0, 0], outputs
    issued = {re.search(r"clientId ([0-9a-f]{32})", out).group(1) for out, _ in outputs}  # type: ignore[union-attr]
    assert len(issued) == 4
    assert seen and all(matches for _, matches in seen)
    final = files.check_pair()
    assert final in issued and _pair_matches(files.key, files.cert)  # the SDK's names too
    assert len([p for p in files.generations.iterdir() if p.name.isdigit()]) <= 2
    with AgentClient(settings_for(emulator, folder)) as client:
        assert client.client_id == final
        client.ping()


# --- §2: a failed --override keeps the identity that works ---------------------------------------------
def test_a_failed_override_keeps_the_sdk_identity_working(emulator: Emulator, tmp_path: Path) -> None:
    """A folder in the SDK's plain layout, and the set can not be written (something is in the
    way of the generations folder): one line, exit 1, and the old identity still answers."""
    managed = settings_for(emulator, tmp_path / "managed")
    old_id = provision(managed).client_id
    files = CredentialFiles(managed.cert_folder, managed.client_name)
    plain = CredentialFiles(tmp_path / "sdk", managed.client_name)
    plain.folder.mkdir(mode=0o700)
    for source, target in ((files.key, plain.key), (files.csr, plain.csr), (files.cert, plain.cert)):
        target.write_bytes(source.read_bytes())
    plain.generations.write_text("in the way\n")
    process = _cli("provision", "--override", *_flags(emulator, plain.folder))
    out, err = process.communicate(timeout=CLI_TIMEOUT_S)
    assert process.returncode == 1 and out == "" and len(err.splitlines()) == 1 and "in the way" in err
    assert plain.check_pair() == old_id
    with AgentClient(settings_for(emulator, plain.folder)) as client:
        assert client.client_id == old_id
        client.ping()


def test_an_override_that_cannot_replace_the_certificate_keeps_the_old_identity(emulator: Emulator,
                                                                               tmp_path: Path) -> None:
    """The issue's case: the SDK's certificate file cannot be replaced (immutable). Needs
    ``chattr`` on the test's file system (ext4 as root)."""
    settings = settings_for(emulator, tmp_path / "certs")
    old_id = provision(settings).client_id
    files = CredentialFiles(settings.cert_folder, settings.client_name)
    plain = {path: path.read_bytes() for path in (files.key, files.csr, files.cert)}
    files.remove()
    for path, data in plain.items():  # back to the SDK's plain layout
        path.write_bytes(data)
    if subprocess.run(["chattr", "+i", str(files.cert)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available on this file system")
    try:
        process = _cli("provision", "--override", *_flags(emulator, files.folder))
        _, err = process.communicate(timeout=CLI_TIMEOUT_S)
    finally:
        subprocess.run(["chattr", "-i", str(files.cert)], check=True)
    assert process.returncode == 1 and len(err.splitlines()) == 1, err
    assert "previous credentials, if any, are unchanged" in err
    assert files.check_pair() == old_id
    assert _pair_matches(files.key, files.cert)
    with AgentClient(settings) as client:
        client.ping()


# --- §2: one client-name rule -----------------------------------------------------------------------
@pytest.mark.parametrize(("name", "why"), [
    ("../../tmp/evil", "cannot contain '/'"), ("a\\b", "cannot contain"), ("..", "'..'"),
    ("n" * 65, "at most 64"), ("   ", "must not be empty"), ("tab\there", "printable"),
    ("\ud800", "printable"),
])
def test_client_names_that_cannot_name_files_or_a_certificate_are_refused(name: str, why: str,
                                                                          tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape(why)):
        AgentSettings(client_name=name)
    with pytest.raises(InputError, match="ClientName"):
        TVCMI_client({"MqttHost": "localhost", "MqttProvisionPort": 1, "MqttPort": 2, "MqttKeepAlive": 60,
                      "CaFile": str(tmp_path / "ca.crt"), "CertFolder": str(tmp_path), "ClientName": name})
    assert AgentSettings(client_name="n" * 64).client_name == "n" * 64


# --- §3: the clientId follows the credentials on disk ------------------------------------------------
def test_client_follows_an_override_beside_it(emulator: Emulator, tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path / "certs")
    old_id = provision(settings).client_id
    events: queue.SimpleQueue[ConnectionEvent] = queue.SimpleQueue()
    with AgentClient(settings) as client:
        client.on_connection_change(events.put)
        process = _cli("provision", "--override", *_flags(emulator, settings.cert_folder))
        out, err = process.communicate(timeout=CLI_TIMEOUT_S)
        assert process.returncode == 0, err
        new_id = out.split("clientId ")[1].split()[0]
        assert client.client_id == old_id  # still connected as before: nothing has dropped
        emulator.restart_broker()
        assert not events.get(timeout=WAIT_S).up
        up = events.get(timeout=WAIT_S)
        assert (up.up, up.client_id, up.previous_client_id, up.client_id_changed) == (True, new_id, old_id,
                                                                                       True)
        assert client.client_id == new_id
        client.ping()
        sensor_id = client.create_sensor("After the override").created_sensor_id
    owners = {s["sensorId"]: c["clientId"] for c in emulator.dump()["clients"] for s in c["sensors"]}
    assert owners == {sensor_id: new_id}


def test_removed_credentials_are_said_and_not_retried(emulator: Emulator, tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path / "certs")
    provision(settings)
    client = AgentClient(settings)
    client.connect(WAIT_S)
    try:
        process = _cli("deprovision", *_flags(emulator, settings.cert_folder))
        _, err = process.communicate(timeout=CLI_TIMEOUT_S)
        assert process.returncode == 0, err
        emulator.restart_broker()
        assert not client.wait_connected(WAIT_S)  # returns at the first attempt: final
        error = client.fatal_error
        assert error is not None and error.kind is ConnectionErrorKind.CREDENTIALS
        assert f"in {settings.cert_folder}" in str(error) and "run `pibridge provision`" in str(error)
        assert "refused" not in str(error)
    finally:
        client.close()


# --- §3: smart with a slow agent, and timeouts ----------------------------------------------------
def test_smart_with_a_slow_agent_keeps_the_certificate(emulator: Emulator, tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path / "certs")
    first = provision(settings)
    emulator.pause_core()
    try:
        kept = provision(settings, ProvisioningMode.SMART, check_timeout=1.0)
    finally:
        emulator.resume_core()
    assert (kept.client_id, kept.newly_provisioned) == (first.client_id, False)
    assert "no answer" in kept.check_failure


@pytest.mark.parametrize("seconds", [0, -1, math.nan, math.inf, 1e300, True, "10"])
def test_timeouts_are_checked_before_anything_starts(seconds: Any, emulator: Emulator,
                                                    tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path / "certs")
    provision(settings)
    with pytest.raises(ValueError, match="request_timeout"):
        AgentClient(settings, request_timeout=seconds)
    client = AgentClient(settings)
    with pytest.raises(ValueError, match="timeout"):
        client.connect(seconds)
    assert not client.connected and threading.active_count() < 50
    for keyword in ("timeout", "check_timeout", "fallback_after"):
        with pytest.raises(ValueError, match=keyword):
            provision(settings, ProvisioningMode.OVERRIDE, **{keyword: seconds})
    with AgentClient(settings) as connected:
        with pytest.raises(ValueError, match="timeout"):
            connected.ping_async(timeout=seconds)
        connected.ping()


# --- §6: messages that point the right way ---------------------------------------------------------
def test_a_host_that_does_not_resolve_is_not_a_refusal(emulator: Emulator, tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path / "certs", host="nosuch.invalid")
    with pytest.raises(AgentConnectionError) as caught:
        provision(settings)
    assert caught.value.kind is ConnectionErrorKind.UNRESOLVED
    assert "cannot resolve host 'nosuch.invalid'" in str(caught.value)
    provision(settings_for(emulator, tmp_path / "certs"))
    with pytest.raises(AgentConnectionError) as caught:
        AgentClient(settings).connect(WAIT_S)
    assert caught.value.kind is ConnectionErrorKind.UNRESOLVED


def test_the_api_port_given_as_provisioning_port_is_named(emulator: Emulator, tmp_path: Path) -> None:
    """TLS 1.3: the API port completes the handshake without a client certificate and hangs up,
    sometimes with an alert, sometimes without. Either way it is told apart from a rejection."""
    settings = settings_for(emulator, tmp_path / "certs", provision_port=emulator.port)
    for _ in range(3):
        with pytest.raises(AgentConnectionError) as caught:
            request_certificate(settings, make_key_and_csr("pibridge")[1], timeout=WAIT_S)
        assert caught.value.kind is ConnectionErrorKind.CERTIFICATE_REQUIRED
        assert "check --provision-port" in str(caught.value) and "--override" not in str(caught.value)
    assert not (tmp_path / "certs").exists()


def test_a_garbage_ca_file_is_named_and_re_provisioning_is_not_advised(emulator: Emulator,
                                                                       tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path / "certs")
    provision(settings)
    garbage = tmp_path / "ca.crt"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    bad = settings_for(emulator, tmp_path / "certs", ca_file=garbage)
    for attempt in (lambda: provision(bad, ProvisioningMode.OVERRIDE),
                    lambda: AgentClient(bad).connect(WAIT_S)):
        with pytest.raises(ConfigurationError) as caught:
            attempt()
        assert f"CA file {garbage} is not a PEM certificate" in str(caught.value)
        assert "provision" not in str(caught.value)


def test_a_ca_file_that_turns_to_garbage_while_running_is_final_and_named(emulator: Emulator,
                                                                          tmp_path: Path) -> None:
    ca_copy = tmp_path / "ca.crt"
    shutil.copy(emulator.ca_file, ca_copy)
    settings = settings_for(emulator, tmp_path / "certs", ca_file=ca_copy)
    provision(settings)
    with AgentClient(settings) as client:
        ca_copy.write_text("garbage\n")
        emulator.restart_broker()
        assert not client.wait_connected(WAIT_S)
        error = client.fatal_error
        assert error is not None and error.kind is ConnectionErrorKind.CREDENTIALS
        assert f"CA file {ca_copy}" in str(error) and "--ca-file" in str(error)


# --- §4: TVCMI_client's bad input -----------------------------------------------------------------
def _tvcmi(emulator: Emulator, folder: Path, **extra: Any) -> TVCMI_client:
    return TVCMI_client({"MqttHost": emulator.host, "MqttProvisionPort": emulator.provision_port,
                         "MqttPort": emulator.port, "MqttKeepAlive": "None", "CaFile": str(emulator.ca_file),
                         "CertFolder": str(folder), **extra})


@pytest.mark.parametrize("field", ["CertFolder", "CaFile"])
def test_tvcmi_paths_of_unknown_users_are_input_errors(field: str, emulator: Emulator,
                                                      tmp_path: Path) -> None:
    with pytest.raises(InputError, match=f"{field}.*no such user"):
        _tvcmi(emulator, tmp_path, **{field: "~nosuchuser/certs"})


def test_tvcmi_refuses_what_cannot_be_sent(emulator: Emulator, tmp_path: Path) -> None:
    client = _tvcmi(emulator, tmp_path / "certs")
    connected = threading.Event()
    client.on_api_connect = lambda **kwargs: connected.set()
    responses: queue.SimpleQueue[Any] = queue.SimpleQueue()
    client.on_api_response = lambda **kwargs: responses.put(kwargs)
    client.provision()
    responses.get(timeout=WAIT_S)
    client.connect_api()
    assert connected.wait(WAIT_S)
    try:
        body = {"metrics": [{"metricId": "m1", "value": 1.0}]}
        for timestamp in (math.inf, -math.inf, math.nan, "now", True):
            with pytest.raises(InputError, match="timestamp"):
                client.push_metrics("s1", body, timestamp=timestamp)  # type: ignore[arg-type]
        for value in ({1, 2}, object(), b"bytes", math.nan):
            with pytest.raises(InputError, match="metric_data"):
                client.push_metrics("s1", {"metrics": [{"metricId": "m1", "value": value}]})
        for code in ("abc", None, math.inf, math.nan, [1]):
            with pytest.raises(InputError, match="error_code"):
                client.sensor_error("broken", "s1", code)  # type: ignore[arg-type]
            with pytest.raises(InputError, match="error_code"):
                client.client_error("broken", code)  # type: ignore[arg-type]
        client.sensor_error("broken", "s1", "7")  # type: ignore[arg-type]  # a numeric string is a number
        client.push_metrics("s1", body, timestamp=1.7e12)
        assert responses.get(timeout=WAIT_S)["msg"] == b"Sensor was updated."
    finally:
        client.disconnect_api()
