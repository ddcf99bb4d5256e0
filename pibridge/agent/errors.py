"""Errors of the agent client: one base, typed reply errors (one class per agent error code),
connection, timeout, protocol and provisioning failures.

Catch a specific agent error by class (``except UnknownSensorId``) or by code
(``except AgentReplyError as e: if e.code is ErrorCode.UnknownSensorId``).
"""

from __future__ import annotations

import enum

from pibridge.protocol import ErrorCode


class AgentError(Exception):
    """Base of every error the agent client raises."""


class ConfigurationError(AgentError):
    """A setting points at something unusable (e.g. a CA file that does not exist)."""


class ProvisioningError(AgentError):
    """Provisioning failed or the stored credentials are missing/unusable; the message says what to do."""


class ProtocolError(AgentError):
    """The agent's reply is malformed (not JSON where JSON is due, wrong shape, wrong echo)."""

    def __init__(self, message: str, *, topic: str = "", raw: bytes = b"") -> None:
        super().__init__(message)
        self.topic = topic
        self.raw = raw


class RequestTimeout(AgentError, TimeoutError):
    """No answer within the request's timeout. The request keeps its place in its FIFO, so its late
    answer is discarded instead of being credited to the next request."""


class ConnectionErrorKind(enum.StrEnum):
    """Why the agent could not be reached or the connection was lost."""

    REFUSED = "connection refused"
    UNRESOLVED = "host not resolved"
    CERTIFICATE_REJECTED = "certificate rejected"
    #: the port asked for a client certificate where none is due: not the provisioning port
    CERTIFICATE_REQUIRED = "client certificate required"
    #: no credentials on disk (e.g. after a deprovision), or they cannot be loaded
    CREDENTIALS = "credentials unusable"
    SERVER_NOT_TRUSTED = "server not trusted"
    TIMEOUT = "timeout"
    LOST = "connection lost"
    NOT_CONNECTED = "not connected"


class AgentConnectionError(AgentError, ConnectionError):
    """The agent could not be reached, rejected us, or the connection dropped.

    ``kind`` is a `ConnectionErrorKind`; ``address`` is ``host:port``; ``detail`` the low-level text.
    """

    def __init__(self, kind: ConnectionErrorKind, address: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.address = address
        self.detail = detail


class AgentReplyError(AgentError):
    """The agent answered with an error payload ``{"errorMessage", "errorcode"}``.

    ``code`` is an `ErrorCode` (a plain int for codes this client does not know), ``code_name`` its
    name, ``agent_message`` the agent's text, ``raw`` the payload bytes, ``topic`` where it came.
    """

    code_value: int | None = None  # set on the per-code subclasses

    def __init__(self, code: ErrorCode | int, agent_message: str, *, raw: bytes = b"", topic: str = "",
                 request: str = "") -> None:
        self.code = code
        self.code_name = code.name if isinstance(code, ErrorCode) else f"Unknown({int(code)})"
        self.agent_message = agent_message
        self.raw = raw
        self.topic = topic
        prefix = f"{request}: " if request else ""
        super().__init__(f"{prefix}agent error {int(code)} {self.code_name}: {agent_message}")


def _reply_error_classes() -> dict[ErrorCode, type[AgentReplyError]]:
    classes: dict[ErrorCode, type[AgentReplyError]] = {}
    for code in ErrorCode:
        doc = f"Agent error {int(code)} ({code.name})."
        classes[code] = type(code.name, (AgentReplyError,),
                             {"__doc__": doc, "__module__": __name__, "code_value": int(code)})
    return classes


#: One `AgentReplyError` subclass per `ErrorCode`, named exactly like the code.
REPLY_ERRORS: dict[ErrorCode, type[AgentReplyError]] = _reply_error_classes()

UnknownError = REPLY_ERRORS[ErrorCode.UnknownError]
NoBackendConnection = REPLY_ERRORS[ErrorCode.NoBackendConnection]
NoLicence = REPLY_ERRORS[ErrorCode.NoLicence]
InternalError = REPLY_ERRORS[ErrorCode.InternalError]
InvalidJson = REPLY_ERRORS[ErrorCode.InvalidJson]
JsonIsNotAObject = REPLY_ERRORS[ErrorCode.JsonIsNotAObject]
MissingParameter = REPLY_ERRORS[ErrorCode.MissingParameter]
ParameterIsNotAString = REPLY_ERRORS[ErrorCode.ParameterIsNotAString]
ParameterIsNotANumber = REPLY_ERRORS[ErrorCode.ParameterIsNotANumber]
ParameterisNotABool = REPLY_ERRORS[ErrorCode.ParameterisNotABool]
ParameterIsNotAnArray = REPLY_ERRORS[ErrorCode.ParameterIsNotAnArray]
ParameterIsNotAnInteger = REPLY_ERRORS[ErrorCode.ParameterIsNotAnInteger]
UnknownValueUnit = REPLY_ERRORS[ErrorCode.UnknownValueUnit]
UnknownMetricType = REPLY_ERRORS[ErrorCode.UnknownMetricType]
ValueUnitOrValueTypeHasToBeProvided = REPLY_ERRORS[ErrorCode.ValueUnitOrValueTypeHasToBeProvided]
UnknownSensorId = REPLY_ERRORS[ErrorCode.UnknownSensorId]
UnknownMetricId = REPLY_ERRORS[ErrorCode.UnknownMetricId]
NoMetricsUpdated = REPLY_ERRORS[ErrorCode.NoMetricsUpdated]
ForbiddendAccess = REPLY_ERRORS[ErrorCode.ForbiddendAccess]
OutOfRange = REPLY_ERRORS[ErrorCode.OutOfRange]


def reply_error(code: int, agent_message: str, *, raw: bytes = b"", topic: str = "",
                request: str = "") -> AgentReplyError:
    """The typed error for an agent error code (the base class for codes outside §5)."""
    try:
        known = ErrorCode(code)
    except ValueError:
        return AgentReplyError(code, agent_message, raw=raw, topic=topic, request=request)
    return REPLY_ERRORS[known](known, agent_message, raw=raw, topic=topic, request=request)


__all__ = [
    "REPLY_ERRORS", "AgentConnectionError", "AgentError", "AgentReplyError", "ConfigurationError",
    "ConnectionErrorKind", "ProtocolError", "ProvisioningError", "RequestTimeout", "reply_error",
    *(code.name for code in ErrorCode),
]
