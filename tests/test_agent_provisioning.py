"""Provisioning against the real emulator: files and modes, idempotence, override, the legacy
topic fallback, an untrusted server, and `smart` after a revoked certificate vs. a stopped agent."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest
from agent_helpers import core_spy, settings_for, untrusted_ca

from pibridge import protocol
from pibridge.agent import (
    ALREADY_PROVISIONED,
    SUCCESSFULLY_PROVISIONED,
    AgentClient,
    AgentConnectionError,
    AgentReplyError,
    ConnectionErrorKind,
    CredentialFiles,
    ProvisioningMode,
    provision,
    provision_async,
)
from pibridge.agent.x509 import client_id_from_certificate
from pibridge.testing import Emulator

WAIT_S = 20.0


def _client_ids(emulator: Emulator) -> set[str]:
    return {client["clientId"] for client in emulator.dump()["clients"]}


def test_provision_writes_sdk_named_files_with_safe_modes(emulator: Emulator, tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path / "certs", client_name="Green House")
    result = provision(settings)
    files = CredentialFiles(settings.cert_folder, settings.client_name)
    assert result.newly_provisioned and result.message == SUCCESSFULLY_PROVISIONED
    assert sorted(p.name for p in files.folder.iterdir()) == [
        ".GreenHouse.lock", "GreenHouse-cert.pem", "GreenHouse-csr.pem", "GreenHouse-key.pem",
        "GreenHouse.credentials"]
    for path in (files.key, files.csr, files.cert):  # the SDK's names, through the one switch
        assert os.readlink(path) == f"GreenHouse.credentials/current/{path.name}"
    generation = files.generations / os.readlink(files.generations / "current")
    assert sorted(p.name for p in generation.iterdir()) == [
        "GreenHouse-cert.pem", "GreenHouse-csr.pem", "GreenHouse-key.pem", "client-id"]
    assert stat.S_IMODE(files.folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(generation.stat().st_mode) == 0o700
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert result.client_id == client_id_from_certificate(files.cert.read_bytes())
    assert protocol.CLIENT_ID_RE.match(result.client_id)
    assert result.client_id in _client_ids(emulator)


def test_keep_is_idempotent_and_override_makes_a_new_client(emulator: Emulator, tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path / "certs")
    files = CredentialFiles(settings.cert_folder, settings.client_name)
    first = provision(settings)
    key_before = files.key.read_bytes()
    again = provision(settings)
    assert (again.client_id, again.newly_provisioned, again.message) == (first.client_id, False,
                                                                          ALREADY_PROVISIONED)
    assert files.key.read_bytes() == key_before
    renewed = provision(settings, ProvisioningMode.OVERRIDE)
    assert renewed.newly_provisioned and renewed.client_id != first.client_id
    assert files.key.read_bytes() != key_before and stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert files.client_id() == renewed.client_id
    with AgentClient(settings) as client:  # the new certificate works
        assert client.client_id == renewed.client_id
        client.ping()


def test_falls_back_to_the_legacy_topic_with_the_same_bytes(emulator: Emulator, tmp_path: Path) -> None:
    """With the core paused nothing answers on /v1.0/createClient; the client must then publish the
    identical CSR on /createConnector. A spy on the provision broker's private socket sees both
    publishes."""
    settings = settings_for(emulator, tmp_path / "certs")
    spy, seen, heard = core_spy(emulator, [protocol.PROVISION_TOPIC_LEGACY], provision=True)
    try:
        emulator.pause_core()
        future = provision_async(settings, timeout=WAIT_S, fallback_after=0.2)
        assert heard.wait(WAIT_S), "no publish on the legacy topic"
        emulator.resume_core()
        result = future.result(WAIT_S)
    finally:
        spy.close()
    csr = CredentialFiles(settings.cert_folder, settings.client_name).csr.read_bytes()
    assert seen[0] == (protocol.PROVISION_TOPIC_LEGACY, csr)
    assert result.newly_provisioned and result.client_id in _client_ids(emulator)
    assert hashlib.sha256(seen[0][1]).hexdigest() == hashlib.sha256(csr).hexdigest()


def test_untrusted_server_is_reported_as_such(emulator: Emulator, tmp_path: Path) -> None:
    good = settings_for(emulator, tmp_path / "certs")
    provision(good)
    wrong = settings_for(emulator, tmp_path / "certs", ca_file=untrusted_ca(tmp_path / "other-ca.crt"))
    with pytest.raises(AgentConnectionError) as caught:
        provision(wrong, ProvisioningMode.OVERRIDE)
    assert caught.value.kind is ConnectionErrorKind.SERVER_NOT_TRUSTED
    assert f"{emulator.host}:{emulator.provision_port}" in str(caught.value)
    with pytest.raises(AgentConnectionError) as caught:
        AgentClient(wrong).connect(WAIT_S)
    assert caught.value.kind is ConnectionErrorKind.SERVER_NOT_TRUSTED
    assert "--ca-file" in str(caught.value) and f"{emulator.host}:{emulator.port}" in str(caught.value)


def test_revoked_certificate_is_rejected_and_smart_reprovisions(emulator: Emulator, tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path / "certs")
    old_id = provision(settings).client_id
    with AgentClient(settings) as client:
        client.deprovision()  # revoked before the answer: no broker restart needed
    client = AgentClient(settings)
    with pytest.raises(AgentConnectionError) as caught:
        client.connect(WAIT_S, persist=True)  # even when persisting: a rejection is final
    assert caught.value.kind is ConnectionErrorKind.CERTIFICATE_REJECTED
    assert "pibridge provision --override" in str(caught.value) and not client.connected
    assert provision(settings, ProvisioningMode.KEEP).client_id == old_id  # keep never checks
    renewed = provision(settings, ProvisioningMode.SMART)
    assert renewed.newly_provisioned and renewed.client_id != old_id
    with AgentClient(settings) as client:
        client.ping()


def test_reconnect_right_after_deprovision_is_rejected(emulator: Emulator, tmp_path: Path) -> None:
    """The emulator revokes before it answers: a reconnect the moment the answer arrives is refused,
    while a connection that was already open stays up and gets error 18."""
    settings = settings_for(emulator, tmp_path / "certs")
    provision(settings)
    with AgentClient(settings) as bystander, AgentClient(settings) as client:
        client.deprovision()
        again = AgentClient(settings)
        with pytest.raises(AgentConnectionError) as caught:
            again.connect(WAIT_S)
        assert caught.value.kind is ConnectionErrorKind.CERTIFICATE_REJECTED
        with pytest.raises(AgentReplyError) as refused:
            bystander.ping()
        assert refused.value.code == protocol.ErrorCode.ForbiddendAccess


def test_client_connects_again_after_a_rejection_and_a_new_certificate(emulator: Emulator,
                                                                       tmp_path: Path) -> None:
    """A rejected certificate stops the link for good; connect() on the same client after
    re-provisioning starts afresh with the new certificate instead of returning at once."""
    settings = settings_for(emulator, tmp_path / "certs")
    provision(settings)
    client = AgentClient(settings)
    client.connect(WAIT_S)
    went_down = threading.Event()
    client.on_connection_change(lambda event: event.up or went_down.set())
    with AgentClient(settings) as other:
        other.deprovision()
    emulator.restart_broker()  # drops the connection; the reconnect is refused: fatal
    assert went_down.wait(WAIT_S)
    assert not client.wait_connected(WAIT_S)  # returns as soon as the reconnect is rejected
    assert client.fatal_error is not None
    assert client.fatal_error.kind is ConnectionErrorKind.CERTIFICATE_REJECTED
    renewed = provision(settings, ProvisioningMode.OVERRIDE)
    client.connect(WAIT_S)
    try:
        assert client.connected and client.client_id == renewed.client_id
        client.ping()
    finally:
        client.close()


def test_smart_keeps_the_certificate_when_the_agent_is_merely_down(emulator: Emulator,
                                                                   tmp_path: Path) -> None:
    settings = settings_for(emulator, tmp_path / "certs", provisioning=ProvisioningMode.SMART)
    first = provision(settings)
    assert provision(settings) == first.__class__(first.client_id, False, first.cert_file, first.key_file)
    cert_before = first.cert_file.read_bytes()
    emulator.stop()
    kept = provision(settings, check_timeout=2.0)
    assert kept.client_id == first.client_id and not kept.newly_provisioned
    assert "connection refused" in kept.check_failure
    assert first.cert_file.read_bytes() == cert_before
    emulator.start()
    with AgentClient(settings) as client:
        assert client.client_id == first.client_id
        client.ping()
