"""Where the agent is and where this client keeps its credentials (defaults: a real agent)."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from pathlib import Path

from pibridge import protocol

DEFAULT_CERT_FOLDER = Path("/var/lib/pibridge/certs")
DEFAULT_CLIENT_NAME = "pibridge"
#: The longest client name: it is the CN of the CSR, and X.509 bounds a CN at 64 characters
#: (RFC 5280 ub-common-name).
CLIENT_NAME_MAX = 64
#: The longest wait any timeout may ask for (s): beyond it `threading` waits overflow, and a
#: day is longer than anyone means.
MAX_TIMEOUT_S = 86_400.0


def check_client_name(value: object) -> str:
    """``value`` if it can be the client name, else ValueError saying why.

    The name becomes file names in the cert folder (spaces removed, agent-api.md §3.6) and the CN
    of the CSR: no ``/`` or ``\\``, no ``..``, printable characters only, 1–64 characters,
    not only spaces. The one rule for profiles, flags, settings and `TVCMI_client`'s ClientName.
    """
    if not isinstance(value, str):
        raise ValueError(f"client_name must be text, not {value!r}")
    shown = value if len(value) <= CLIENT_NAME_MAX else value[:CLIENT_NAME_MAX] + "…"
    if not value.replace(" ", ""):
        raise ValueError("client_name must not be empty")
    if len(value) > CLIENT_NAME_MAX:
        raise ValueError(f"client_name is {len(value)} characters long; at most {CLIENT_NAME_MAX} fit a "
                         f"certificate's common name: {shown!r}")
    if "/" in value or "\\" in value or ".." in value:
        raise ValueError(f"client_name names files in the cert folder, so it cannot contain '/', '\\' "
                         f"or '..': {shown!r}")
    if not value.isprintable():
        raise ValueError(f"client_name must be printable characters only: {shown!r}")
    return value


def check_seconds(name: str, value: object) -> float:
    """``value`` as seconds if it is a number in (0, `MAX_TIMEOUT_S`], else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of seconds, not {value!r}")
    seconds = float(value)
    if not math.isfinite(seconds) or not 0 < seconds <= MAX_TIMEOUT_S:
        raise ValueError(f"{name} must be more than 0 and at most {MAX_TIMEOUT_S:g} seconds, not {value!r}")
    return seconds


def expand_path(name: str, value: object) -> Path:
    """``value`` as a Path with ``~`` / ``~user`` expanded; ValueError for an unknown user or a
    path no file system takes (`pibridge.paths.check_path`: a NUL byte, too long, …)."""
    from pibridge.paths import check_path

    path = Path(value)  # type: ignore[arg-type]  # str or PathLike; TypeError for anything else
    try:
        check_path(path)
    except ValueError as exc:
        raise ValueError(f"{name} {exc}") from None
    try:
        return path.expanduser()
    except RuntimeError:  # Path.expanduser: "Could not determine home directory."
        user = path.parts[0]
        raise ValueError(f"{name} {str(path)!r}: cannot expand {user!r}: no such user") from None


def check_host(value: object) -> str:
    """``value`` if it can be the agent's host: an IP address, or a host name IDNA can encode
    (no NUL or control character, labels of 1–63 characters); else ValueError saying why. The
    one rule for profiles, flags and settings (a bad name used to fail only when connecting)."""
    import ipaddress

    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        raise ValueError(f"host must be a host name or address, not {value!r}")
    shown = value if len(value) <= 80 else value[:79] + "…"
    if not value.isprintable():
        raise ValueError(f"host must be a host name or address, not {shown!r} (a NUL or control character)")
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    try:
        value.encode("idna")
    except UnicodeError:
        raise ValueError(f"host must be a host name or address: {shown!r} is not a valid host name (labels "
                         "of 1–63 characters between dots)") from None
    return value


def check_ca_file(ca_file: Path) -> None:
    """`ConfigurationError` unless ``ca_file`` holds a usable CA certificate: checked before any
    connection, so a missing or garbage CA reads as what it is, not as a TLS failure."""
    import ssl

    from pibridge.agent.errors import ConfigurationError

    if not ca_file.is_file():
        raise ConfigurationError(f"CA file {ca_file} not found: is the TeamViewer IoT Agent installed? "
                                 "(pass --ca-file to use another, e.g. the emulator's)")
    try:
        ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
        raise ConfigurationError(f"CA file {ca_file} is not a PEM certificate ({reason}): pass the "
                                 "agent's CA certificate with --ca-file") from None


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
        """Every field checked (ValueError saying which and why); ``~`` expanded in paths."""
        check_host(self.host)
        object.__setattr__(self, "ca_file", expand_path("ca_file", self.ca_file))
        object.__setattr__(self, "cert_folder", expand_path("cert_folder", self.cert_folder))
        try:
            object.__setattr__(self, "provisioning", ProvisioningMode(self.provisioning))
        except ValueError:
            modes = ", ".join(str(m) for m in ProvisioningMode)
            raise ValueError(f"provisioning must be one of {modes}, not {self.provisioning!r}") from None
        for name in ("port", "provision_port"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
                raise ValueError(f"{name} must be a TCP port number (1–65535), not {value!r}")
        check_client_name(self.client_name)

    def require_ca_file(self) -> None:
        """`check_ca_file` of ``ca_file``."""
        check_ca_file(self.ca_file)

    @property
    def api_address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def provision_address(self) -> str:
        return f"{self.host}:{self.provision_port}"
