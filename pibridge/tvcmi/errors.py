"""The TeamViewer IoT Python SDK's error classes, with the SDK's names and attributes.

Scripts catch these by name (``except TvcmiError``, ``except ConfigError``), so the classes,
their base and their ``error_code`` / ``message`` attributes match the SDK. Unlike the SDK, each
message names the field or the file that is wrong.
"""

from __future__ import annotations


class TvcmiError(Exception):
    """Base class: ``error_code`` (an errno, MQTT code or None) and ``message``."""

    def __init__(self, error_code: int | None = None, message: str | None = None) -> None:
        self.error_code = error_code
        self.message = message if message is not None else f"An error occurred {error_code}"
        super().__init__(self.message)


class CallbackError(TvcmiError):
    """A user callback has the wrong signature."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)


class TLSError(TvcmiError):
    """TLS could not be set up (CA, certificate or key unreadable or invalid)."""

    def __init__(self, message: str = "Error occurred when setting TLS.") -> None:
        super().__init__(None, message)


class ConnectionParamError(TvcmiError):
    """A connection parameter has an unusable value (port not a number, unknown host)."""

    def __init__(self, message: str = "Error connecting with the provided connection parameters") -> None:
        super().__init__(None, message)


class ConnectionError(TvcmiError):  # shadows the builtin on purpose: the SDK name
    """The agent could not be reached; ``error_code`` is the MQTT code or errno."""

    def __init__(self, error_code: int | None, message: str | None = None) -> None:
        super().__init__(error_code, message or f"Error connecting to server: {error_code}")


class FileError(TvcmiError):
    """A file could not be read or written."""

    def __init__(self, file_path: str, reason: str, error_code: int | None = None) -> None:
        super().__init__(error_code, f"Could not access the file at {file_path}. Exited with {reason}")
        self.file_path = file_path


class ConfigError(TvcmiError):
    """The parameters could not be read: an unreadable config file or malformed JSON."""

    def __init__(self, source: str, reason: str = "") -> None:
        detail = f": {reason}" if reason else ""
        super().__init__(None, f"Could not retrieve data from {source}{detail}")
        self.source = source


class InputError(TvcmiError):
    """A required field is missing or has a value of the wrong kind."""

    def __init__(self, source: str, field: str, reason: str = "is missing") -> None:
        super().__init__(None, f"Field {field} {reason} in the input at {source}")
        self.source = source
        self.field = field


class DirectoryError(TvcmiError):
    """The certificate folder could not be created."""

    def __init__(self, dir_path: str, reason: str, error_code: int | None = None) -> None:
        super().__init__(error_code, f"Could not create a directory at {dir_path}. Exited with {reason}")
        self.dir_path = dir_path


class KeyGenerationError(TvcmiError, IOError):
    """The private key could not be generated."""

    def __init__(self, reason: str, error_code: int | None = None) -> None:
        TvcmiError.__init__(self, error_code, f"Could not generate the private key: {reason}")
        self.errno = error_code


class KeyCertificateError(TvcmiError, IOError):
    """The key or certificate could not be written or read."""

    def __init__(self, reason: str, error_code: int | None = None) -> None:
        TvcmiError.__init__(self, error_code, f"Error writing/reading to/from disk: {reason}")
        self.errno = error_code
