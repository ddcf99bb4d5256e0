"""Where the agent is and where this client keeps its credentials (defaults: a real agent)."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from pibridge import protocol

DEFAULT_CERT_FOLDER = Path("/var/lib/pibridge/certs")
DEFAULT_CLIENT_NAME = "pibridge"


class ProvisioningMode(enum.StrEnum):
    """What `provision` does when credentials are already stored.

    ``keep``: reuse key and certificate. ``smart``: reuse them unless the agent rejects the
    certificate itself (then provision anew). ``override``: always provision anew (an explicit
    action, never a profile setting).
    """

    KEEP = "keep"
    SMART = "smart"
    OVERRIDE = "override"


#: Modes a profile or ``--provisioning`` may choose.
CONFIGURABLE_MODES = (ProvisioningMode.KEEP, ProvisioningMode.SMART)


@dataclass(frozen=True)
class AgentSettings:
    """Connection and credential settings of one agent client."""

    host: str = protocol.DEFAULT_HOST
    port: int = protocol.DEFAULT_API_PORT
    provision_port: int = protocol.DEFAULT_PROVISION_PORT
    ca_file: Path = field(default_factory=lambda: Path(protocol.DEFAULT_CA_FILE))
    cert_folder: Path = DEFAULT_CERT_FOLDER
    client_name: str = DEFAULT_CLIENT_NAME
    provisioning: ProvisioningMode = ProvisioningMode.KEEP

    def __post_init__(self) -> None:
        object.__setattr__(self, "ca_file", Path(self.ca_file))
        object.__setattr__(self, "cert_folder", Path(self.cert_folder))
        object.__setattr__(self, "provisioning", ProvisioningMode(self.provisioning))
        for name in ("port", "provision_port"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                raise ValueError(f"{name} must be a TCP port number (1–65535), not {value!r}")
        if not self.client_name.replace(" ", ""):
            raise ValueError("client_name must not be empty")

    def require_ca_file(self) -> None:
        """`ConfigurationError` unless ``ca_file`` exists: checked before any connection, so a
        missing CA reads as what it is, not as a TLS failure."""
        if not self.ca_file.is_file():
            from pibridge.agent.errors import ConfigurationError

            raise ConfigurationError(f"CA file {self.ca_file} not found: is the TeamViewer IoT Agent "
                                     "installed? (pass --ca-file to use another, e.g. the emulator's)")

    @property
    def api_address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def provision_address(self) -> str:
        return f"{self.host}:{self.provision_port}"
