"""Provisioning (agent-api.md §3): get a client certificate from the agent's provisioning port.

The exchange: make an RSA-2048 key and a SHA-256-signed CSR; ``h`` = sha256 hex of exactly the
CSR bytes published; subscribe to ``/certBack/<h>`` and ``/certBack/<h>/error`` first; publish the
CSR on ``/v1.0/createClient`` and, with no answer after ``fallback_after`` seconds, on
``/createConnector``; store the certificate and read the clientId from its CN.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from pibridge import protocol
from pibridge.agent.client import AgentClient, connection_error
from pibridge.agent.credentials import CredentialFiles
from pibridge.agent.errors import (
    AgentConnectionError,
    AgentError,
    ConnectionErrorKind,
    ProvisioningError,
    RequestTimeout,
    reply_error,
)
from pibridge.agent.settings import AgentSettings, ProvisioningMode, check_seconds
from pibridge.mqtt import ConnectFailure, Endpoint, MqttError, MqttSession, TlsFiles, new_client_id

log = logging.getLogger(__name__)

#: Seconds to wait for the certificate in total (both topics).
DEFAULT_PROVISION_TIMEOUT_S = 30.0
DEFAULT_CHECK_TIMEOUT_S = 10.0
#: Fresh connections that must all be rejected before `smart` provisions anew.
REJECTION_CONFIRMATIONS = 2

ALREADY_PROVISIONED = "Client is already provisioned."
SUCCESSFULLY_PROVISIONED = "Client is successfully provisioned."


@dataclass(frozen=True)
class ProvisionResult:
    """Outcome of `provision`. ``newly_provisioned`` False: stored credentials were kept.
    ``check_failure``: in smart mode, why the stored certificate could not be checked (kept)."""

    client_id: str
    newly_provisioned: bool
    cert_file: Path
    key_file: Path
    check_failure: str = ""

    @property
    def message(self) -> str:
        """The SDK's wording (agent-api.md §7)."""
        return SUCCESSFULLY_PROVISIONED if self.newly_provisioned else ALREADY_PROVISIONED


def provision(settings: AgentSettings, mode: ProvisioningMode | str | None = None, *,
              timeout: float = DEFAULT_PROVISION_TIMEOUT_S,
              fallback_after: float = protocol.PROVISION_FALLBACK_S,
              check_timeout: float = DEFAULT_CHECK_TIMEOUT_S) -> ProvisionResult:
    """Make sure credentials are stored; provision when needed. Idempotent.

    ``mode`` (default ``settings.provisioning``): ``keep`` reuses stored key+certificate;
    ``override`` always provisions anew (new clientId); ``smart`` connects and pings with the
    stored certificate and provisions anew only if the agent rejects the certificate — never
    when the agent is down, refuses connections or is slow (then the credentials are kept and
    ``check_failure`` says why they could not be checked).
    """
    mode = ProvisioningMode(mode or settings.provisioning)
    timeout = check_seconds("timeout", timeout)
    fallback_after = check_seconds("fallback_after", fallback_after)
    check_timeout = check_seconds("check_timeout", check_timeout)
    settings.require_ca_file()  # even for `keep`: a connection follows, and a wrong CA is said now
    files = CredentialFiles(settings.cert_folder, settings.client_name)
    # one provisioning per folder at a time: a second `keep` waits and then finds the first's set
    with files.locked():
        if mode is not ProvisioningMode.OVERRIDE and files.stored():
            kept = ProvisionResult(files.check_pair(), False, files.cert, files.key)
            if mode is ProvisioningMode.KEEP:
                return kept
            verdict = _check_stored_certificate(settings, check_timeout)
            if verdict is None:
                return kept
            if not (isinstance(verdict, AgentConnectionError)
                    and verdict.kind is ConnectionErrorKind.CERTIFICATE_REJECTED):
                log.warning("kept the stored certificate unchecked: %s", verdict)
                return ProvisionResult(kept.client_id, False, kept.cert_file, kept.key_file, str(verdict))
            log.warning("the agent rejected certificate %s: provisioning a new one", files.cert)
        return _provision_new(settings, files, timeout=timeout, fallback_after=fallback_after)


def provision_async(settings: AgentSettings, mode: ProvisioningMode | str | None = None, *,
                    timeout: float = DEFAULT_PROVISION_TIMEOUT_S,
                    fallback_after: float = protocol.PROVISION_FALLBACK_S,
                    check_timeout: float = DEFAULT_CHECK_TIMEOUT_S) -> Future[ProvisionResult]:
    """`provision` on a worker thread; the future carries the result or the `AgentError`."""
    future: Future[ProvisionResult] = Future()

    def run() -> None:
        try:
            future.set_result(provision(settings, mode, timeout=timeout, fallback_after=fallback_after,
                                        check_timeout=check_timeout))
        except BaseException as exc:
            future.set_exception(exc)

    threading.Thread(target=run, name="agent-provision", daemon=True).start()
    return future


def _check_stored_certificate(settings: AgentSettings,
                              timeout: float) -> AgentConnectionError | RequestTimeout | None:
    """None when the agent accepts the stored certificate (connect + ping), else why not.

    A rejection must be seen on `REJECTION_CONFIRMATIONS` fresh connections in a row: re-provisioning
    orphans everything registered, so one dropped handshake (e.g. a broker restarting) must not do it.
    """
    verdict: AgentConnectionError | RequestTimeout | None = None
    for _ in range(REJECTION_CONFIRMATIONS):
        client = AgentClient(settings, request_timeout=timeout)
        try:
            client.connect(timeout)
            client.ping()
            return None
        except (AgentConnectionError, RequestTimeout) as exc:
            verdict = exc
        finally:
            client.close()
        if not (isinstance(verdict, AgentConnectionError)
                and verdict.kind is ConnectionErrorKind.CERTIFICATE_REJECTED):
            return verdict
    return verdict


def _provision_new(settings: AgentSettings, files: CredentialFiles, *, timeout: float,
                   fallback_after: float) -> ProvisionResult:
    from pibridge.agent.x509 import certificate_matches_key, client_id_from_certificate, make_key_and_csr

    settings.require_ca_file()
    files.ensure_folder()
    key_pem, csr_pem = make_key_and_csr(settings.client_name)
    cert_pem = request_certificate(settings, csr_pem, timeout=timeout, fallback_after=fallback_after)
    client_id = client_id_from_certificate(cert_pem, source="the issued certificate")
    if not certificate_matches_key(cert_pem, key_pem):
        raise ProvisioningError(f"the agent at {settings.provision_address} issued a certificate for "
                                "another key: try `pibridge provision --override` again")
    try:
        files.store(key_pem, csr_pem, cert_pem, client_id)
    except OSError as exc:  # the previous set, if any, is still the stored one
        raise ProvisioningError(f"cannot write the credentials to {files.folder} "
                                f"({exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}); "
                                "the previous credentials, if any, are unchanged") from exc
    log.info("provisioned as client %s (certificate %s)", client_id, files.cert)
    return ProvisionResult(client_id, True, files.cert, files.key)


def request_certificate(settings: AgentSettings, csr_pem: bytes, *,
                        timeout: float = DEFAULT_PROVISION_TIMEOUT_S,
                        fallback_after: float = protocol.PROVISION_FALLBACK_S) -> bytes:
    """Send ``csr_pem`` to the provisioning port and return the issued certificate PEM."""
    timeout = check_seconds("timeout", timeout)
    fallback_after = check_seconds("fallback_after", fallback_after)
    settings.require_ca_file()
    digest = hashlib.sha256(csr_pem).hexdigest()
    cert_topic = protocol.CERT_BACK_TOPIC.format(hash=digest)
    error_topic = protocol.CERT_BACK_ERROR_TOPIC.format(hash=digest)
    answered = threading.Event()
    answer: list[tuple[str, bytes]] = []
    lost: list[ConnectFailure] = []

    def on_message(topic: str, payload: bytes) -> None:
        if topic in (cert_topic, error_topic) and not answer:
            answer.append((topic, payload))
            answered.set()

    def on_closed(failure: ConnectFailure) -> None:
        lost.append(failure)
        answered.set()

    session: MqttSession | None = None
    try:
        session = MqttSession(Endpoint(settings.host, settings.provision_port, TlsFiles(settings.ca_file)),
                              client_id=new_client_id(), on_message=on_message, on_closed=on_closed)
        session.open(min(timeout, DEFAULT_CHECK_TIMEOUT_S))
        session.subscribe([cert_topic, error_topic])  # first, so no answer can be missed
        session.publish(protocol.PROVISION_TOPIC, csr_pem)
        if not answered.wait(min(fallback_after, timeout)):
            log.info("no certificate on %s after %g s: trying %s", protocol.PROVISION_TOPIC, fallback_after,
                     protocol.PROVISION_TOPIC_LEGACY)
            session.publish(protocol.PROVISION_TOPIC_LEGACY, csr_pem)
            answered.wait(max(0.0, timeout - fallback_after))
    except ConnectFailure as failure:
        raise connection_error(failure, settings, provisioning=True) from failure
    except MqttError as exc:
        raise AgentConnectionError(ConnectionErrorKind.LOST, settings.provision_address,
                                   f"provisioning at {settings.provision_address} failed: {exc}") from exc
    finally:
        if session is not None:
            session.close()
    if answer:
        topic, payload = answer[0]
        if topic == cert_topic:
            return payload
        raise _certificate_error(settings, payload)
    if lost:
        raise connection_error(lost[0], settings, provisioning=True)
    raise ProvisioningError(f"no certificate from the agent at {settings.provision_address} within "
                            f"{timeout:g} s (tried {protocol.PROVISION_TOPIC} and "
                            f"{protocol.PROVISION_TOPIC_LEGACY}): is the agent healthy?")


def _certificate_error(settings: AgentSettings, payload: bytes) -> AgentError:
    import json

    try:
        body = json.loads(payload)
        error = reply_error(int(body["errorcode"]), str(body.get("errorMessage", "")), raw=payload)
    except (ValueError, TypeError, KeyError):
        return ProvisioningError(f"the agent at {settings.provision_address} refused the CSR: "
                                 f"{payload[:200]!r}")
    failure = ProvisioningError(f"the agent at {settings.provision_address} refused the CSR: "
                                f"error {int(error.code)} {error.code_name}: {error.agent_message}")
    failure.__cause__ = error
    return failure
