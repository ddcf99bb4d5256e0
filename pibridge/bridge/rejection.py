"""What delivery does while the agent refuses this client (a rejected certificate, or error 18
ForbiddendAccess), and how it provisions.

| provisioning mode | on a refusal                                                             |
|-------------------|--------------------------------------------------------------------------|
| ``smart``         | provision in a child process; new credentials stored → connect afresh    |
|                   | at once; the same kept (the agent accepts the certificate) → wait        |
|                   | `FORBIDDEN_RETRY_S`; re-provisionings spaced by `REPROVISION_BACKOFF`    |
|                   | until a push is acknowledged again                                       |
| ``keep``          | wait `FORBIDDEN_RETRY_S` for credentials replaced on disk; said once     |
|                   | what to run                                                              |

Samples stay queued throughout. Runs on the delivery thread (`Delivery.stop` may kill the
provisioning child from another: `ProvisioningChild.kill` is safe from any thread).
"""

from __future__ import annotations

import enum
import logging
import time

from pibridge.agent import AgentError, AgentSettings, ProvisioningMode
from pibridge.bridge.provisioning import ProvisioningChild
from pibridge.mqtt import Backoff

log = logging.getLogger("pibridge.bridge.delivery")  # delivery's lines, named as before the split

#: Seconds between two attempts while the agent refuses this client (18 with "keep", or a
#: rejected certificate): the credentials may be replaced on disk meanwhile.
FORBIDDEN_RETRY_S = 30.0
#: Delays between consecutive re-provisionings (reset by an acknowledged push): an agent that
#: rejects every new certificate as well gets a new client at most this often, not per loop.
REPROVISION_BACKOFF = Backoff(initial=FORBIDDEN_RETRY_S, cap=3600.0)


class Refusal(enum.Enum):
    """What delivery does after `Rejection.refused`."""

    RESTART = "new credentials stored: connect afresh now"
    WAIT = "wait until `Rejection.forbidden_until` (`Rejection.problem` says why)"
    BACK_OFF = "re-provisioned a moment ago: wait until `Rejection.forbidden_until`, problem unchanged"
    PROVISIONING_FAILED = "provisioning failed (`Rejection.problem` says why): retry after backoff"


class Rejection:
    """The refusal policy of the module docstring, with its provisioning child."""

    def __init__(self, settings: AgentSettings, provisioning: ProvisioningChild) -> None:
        self.settings = settings
        self.provisioning = provisioning
        #: monotonic time before which no connection is tried (0: not waiting)
        self.forbidden_until = 0.0
        #: why we wait (`Refusal.WAIT`), or why provisioning failed (`Refusal.PROVISIONING_FAILED`)
        self.problem = ""
        self._told = False  # the refusal's problem was logged (until a provisioning or connection works)
        self._kept_told = False  # "kept the certificate" was logged (until a push is acknowledged)
        self._reprovision_delays = REPROVISION_BACKOFF.delays()
        self._reprovision_at = 0.0
        self._provisioning_for = ""  # why the last provisioning that failed was run

    def refused(self, why: str) -> Refusal:
        """The agent refuses this client (``why``): re-provision with "smart", else wait for new
        credentials."""
        now = time.monotonic()
        self.forbidden_until = now + FORBIDDEN_RETRY_S
        if self.settings.provisioning is ProvisioningMode.SMART:
            if now < self._reprovision_at:  # re-provisioned a moment ago: back off
                self.forbidden_until = self._reprovision_at
                return Refusal.BACK_OFF
            before = self.provisioning.stored_client_id()
            failure = self.provision(why)
            self._reprovision_at = time.monotonic() + next(self._reprovision_delays)
            if failure is not None:
                self.problem = failure
                return Refusal.PROVISIONING_FAILED
            if self.provisioning.stored_client_id() == before:
                # the agent accepts the stored certificate, so smart provisioning kept it: a new
                # connection would meet the same refusal
                self.forbidden_until = time.monotonic() + FORBIDDEN_RETRY_S
                self.problem = (f"the agent refuses this client ({why}) but accepts its certificate, "
                                f"so provisioning kept it; samples stay queued, tried again in "
                                f"{FORBIDDEN_RETRY_S:g} s and later")
                if not self._kept_told:
                    self._kept_told = True
                    log.error("%s", self.problem)
                return Refusal.WAIT
            self.forbidden_until = 0.0
            return Refusal.RESTART
        self.problem = (f"the agent refuses this client ({why}); samples stay queued: run `pibridge "
                        "provision --override` (or set provisioning = \"smart\") to register a new client")
        if not self._told:  # once, until a provisioning or a connection succeeds
            self._told = True
            log.error("%s", self.problem)
        return Refusal.WAIT

    def provision(self, why: str) -> str | None:
        """Provision now (``why`` is logged once per reason); None, or the failure to report."""
        # said once per reason: a retry every few seconds while the agent is away logs nothing new
        (log.warning if why != self._provisioning_for else log.debug)("provisioning (%s)", why)
        self._provisioning_for = why
        try:
            output = self.provisioning.run()
        except (AgentError, OSError) as exc:
            return f"provisioning failed: {exc}"
        self._provisioning_for = ""
        log.info("%s", output)
        self._told = False
        return None

    def connected(self) -> None:
        """A connection is up: a later refusal is said again."""
        self._told = False

    def accepted(self) -> None:
        """A push was acknowledged: this client works, so the next refusal re-provisions at once."""
        if self._reprovision_at:
            self._reprovision_at = 0.0
            self._reprovision_delays = REPROVISION_BACKOFF.delays()
            self._kept_told = False
