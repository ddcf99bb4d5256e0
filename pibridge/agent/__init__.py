"""The TeamViewer IoT Agent client: provisioning, the typed request/reply API, its errors.

Importing this package loads neither ``cryptography`` (only provisioning does, when it makes a
key) nor opens any connection.
"""

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
from pibridge.agent.provisioning import (
    ALREADY_PROVISIONED,
    SUCCESSFULLY_PROVISIONED,
    ProvisionResult,
    provision,
    provision_async,
    request_certificate,
)
from pibridge.agent.settings import AgentSettings, ProvisioningMode, check_client_name
from pibridge.protocol import ErrorCode, Op

__all__ = [
    "ALREADY_PROVISIONED", "DEFAULT_CONNECT_TIMEOUT_S", "DEFAULT_REQUEST_TIMEOUT_S",
    "SUCCESSFULLY_PROVISIONED", "AgentClient", "AgentSettings", "ConnectionEvent", "CredentialFiles",
    "Credentials", "check_client_name",
    "ErrorCode", "LiveData", "MetricDefinition", "Op", "ProvisionResult", "ProvisioningMode", "Reply",
    "encode_push", "provision", "provision_async", "request_certificate",
    *_errors.__all__,
]

