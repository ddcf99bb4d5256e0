"""Provisioning on behalf of the delivery thread: ``pibridge provision --provisioning smart`` in a
child process (so ``cryptography`` never loads into the long-running bridge), which `stop` can
kill, and the client id of the credentials it stored. When and why to provision (no
credentials, a rejected certificate, error 18) is the delivery's decision.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pibridge.agent import AgentError, AgentSettings, CredentialFiles, ProvisioningError, ProvisioningMode

if TYPE_CHECKING:
    import subprocess

#: Seconds a provisioning child process may take.
PROVISION_TIMEOUT_S = 60.0

#: Provisions in this process instead (tests): returns the line to log.
Provisioner = Callable[[AgentSettings], str]


def provisioning_command(settings: AgentSettings) -> list[str]:
    """``python -m pibridge provision --provisioning smart`` with these settings: run in a child
    process, so ``cryptography`` never loads into the long-running bridge. Smart provisions when
    nothing is stored, and anew only if the agent rejects the stored certificate."""
    return [sys.executable, "-m", "pibridge", "provision", "--host", settings.host,
            "--port", str(settings.port), "--provision-port", str(settings.provision_port),
            "--ca-file", str(settings.ca_file), "--cert-folder", str(settings.cert_folder),
            "--client-name", settings.client_name, "--provisioning", str(ProvisioningMode.SMART)]


class ProvisioningChild:
    """Runs `provisioning_command` (or ``provisioner``) for ``settings``, one at a time; none
    starts once ``stopping`` is set."""

    def __init__(self, settings: AgentSettings, stopping: threading.Event,
                 provisioner: Provisioner | None = None) -> None:
        self.settings = settings
        self._stopping = stopping
        self._provisioner = provisioner
        self._lock = threading.Lock()
        self._child: subprocess.Popen[str] | None = None

    def run(self) -> str:
        """Provision; the child's output line. `ProvisioningError` with its last error line (or
        a timeout after `PROVISION_TIMEOUT_S`, or "stopping"), `AgentError` or
        `OSError` from an in-process ``provisioner``."""
        if self._provisioner is not None:
            return self._provisioner(self.settings)
        import subprocess  # here: re-provisioning is rare, the bridge runs for months

        with self._lock:
            if self._stopping.is_set():
                raise ProvisioningError("stopping")
            child = self._child = subprocess.Popen(
                provisioning_command(self.settings), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
        try:
            out, err = child.communicate(timeout=PROVISION_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise ProvisioningError(f"provisioning did not finish within {PROVISION_TIMEOUT_S:g} s") from None
        finally:
            with self._lock:
                self._child = None
        if child.returncode != 0:
            lines = err.strip().splitlines() or [f"provisioning exited with status {child.returncode}"]
            raise ProvisioningError(lines[-1])
        return out.strip()

    def kill(self) -> None:
        """(Any thread.) Kill the child if one runs (`run` then raises)."""
        with self._lock:
            if self._child is not None:
                self._child.kill()

    def stored_client_id(self) -> str:
        """The clientId of the credentials on disk ("" if none or unreadable)."""
        try:
            return CredentialFiles(self.settings.cert_folder, self.settings.client_name).client_id()
        except (AgentError, OSError, ValueError):
            return ""
