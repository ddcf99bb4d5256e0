"""The TeamViewer IoT Agent client: provisioning, the typed request/reply API, its errors.

Importing this package loads neither ``cryptography`` (only provisioning does, when it makes a
key) nor opens any connection.
"""

from typing import TYPE_CHECKING, Any

from pibridge.agent import errors as _errors
from pibridge.agent.client import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_REQUEST_TIMEOUT_S,
    AgentClient,
    ConnectionEvent,
    LiveData,
    MetricDefinition,
    Reply,
    encode_push,
)
from pibridge.agent.credentials import CredentialFiles, Credentials
from pibridge.agent.errors import *  # noqa: F403  (the base errors and one class per agent error code)
from pibridge.agent.settings import AgentSettings, ProvisioningMode, check_client_name
from pibridge.protocol import ErrorCode, Op

if TYPE_CHECKING:
    from pibridge.agent.provisioning import (
        ALREADY_PROVISIONED,
        SUCCESSFULLY_PROVISIONED,
        ProvisionResult,
        provision,
        provision_async,
        request_certificate,
    )

#: Loaded on first use (PEP 562): the bridge provisions in a child process (bridge/provisioning.py),
#: so its own process never pays for the provisioning code's memory (~0.3 MB on a Pi Zero).
_PROVISIONING_NAMES = frozenset({"ALREADY_PROVISIONED", "SUCCESSFULLY_PROVISIONED", "ProvisionResult",
                                 "provision", "provision_async", "request_certificate"})


if not TYPE_CHECKING:   # hidden from mypy, which would let any name through a module __getattr__
    def __getattr__(name: str) -> Any:
        if name in _PROVISIONING_NAMES:
            from pibridge.agent import provisioning
            return getattr(provisioning, name)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*globals(), *_PROVISIONING_NAMES})

__all__ = [
    "ALREADY_PROVISIONED", "DEFAULT_CONNECT_TIMEOUT_S", "DEFAULT_REQUEST_TIMEOUT_S",
    "SUCCESSFULLY_PROVISIONED", "AgentClient", "AgentSettings", "ConnectionEvent", "CredentialFiles",
    "Credentials", "check_client_name",
    "ErrorCode", "LiveData", "MetricDefinition", "Op", "ProvisionResult", "ProvisioningMode", "Reply",
    "encode_push", "provision", "provision_async", "request_certificate",
    *_errors.__all__,
]

