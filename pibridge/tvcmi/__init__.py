"""The TeamViewer IoT Python SDK's API on pibridge: scripts change only their import::

    from pibridge.tvcmi import TVCMI_client, CertOverrideMode, TvcmiError

`TVCMI_client` is a thin layer over `pibridge.agent.AgentClient` (see `pibridge.tvcmi.client`).
"""

from pibridge.tvcmi.client import TVCMI_client
from pibridge.tvcmi.config import CertOverrideMode
from pibridge.tvcmi.errors import (
    CallbackError,
    ConfigError,
    ConnectionError,
    ConnectionParamError,
    DirectoryError,
    FileError,
    InputError,
    KeyCertificateError,
    KeyGenerationError,
    TLSError,
    TvcmiError,
)

__all__ = [
    "CallbackError", "CertOverrideMode", "ConfigError", "ConnectionError", "ConnectionParamError",
    "DirectoryError", "FileError", "InputError", "KeyCertificateError", "KeyGenerationError", "TLSError",
    "TVCMI_client", "TvcmiError",
]
