"""`TVCMI_client`'s ``parameters``: a JSON string, a dict, or a config file of ``Key Value`` lines.

Config file format, as in the SDK manual (``#`` starts a comment, any whitespace separates)::

    MqttHost             localhost
    MqttProvisionPort    18883
    MqttPort             18884
    MqttKeepAlive        60
    CaFile               /var/lib/teamviewer-iot-agent/certs/TeamViewerAuthority.crt
    CertFolder           /home/pi/certs
"""

from __future__ import annotations

import enum
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pibridge.agent.settings import ProvisioningMode, check_client_name, expand_path
from pibridge.mqtt import DEFAULT_KEEPALIVE_S
from pibridge.tvcmi.errors import ConfigError, ConnectionParamError, InputError

REQUIRED_FIELDS = ("MqttHost", "MqttProvisionPort", "MqttPort", "MqttKeepAlive", "CaFile", "CertFolder")
DEFAULT_CLIENT_NAME = "TVCMI_client"


class CertOverrideMode(enum.Enum):
    """The SDK's certificate override modes (values as in the SDK)."""

    OVERRIDE = 1
    NOT_OVERRIDE = 2
    SMART = 3


#: SDK mode -> pibridge provisioning mode.
PROVISIONING_MODE: dict[CertOverrideMode, ProvisioningMode] = {
    CertOverrideMode.OVERRIDE: ProvisioningMode.OVERRIDE,
    CertOverrideMode.NOT_OVERRIDE: ProvisioningMode.KEEP,
    CertOverrideMode.SMART: ProvisioningMode.SMART,
}


@dataclass(frozen=True)
class TvcmiParameters:
    """The parsed, checked connection parameters. ``keepalive_s`` is parsed but, as the manual
    says of ``MqttKeepAlive``, not used (the agent client keeps its own keep-alive)."""

    host: str
    provision_port: int
    port: int
    keepalive_s: int
    ca_file: Path
    cert_folder: Path
    client_name: str = DEFAULT_CLIENT_NAME
    override: CertOverrideMode = CertOverrideMode.NOT_OVERRIDE
    source: str = "the parameters"


def _strip_comment(line: str) -> str:
    """Drop a ``#`` comment: one at the start of the line or after whitespace (a ``#`` inside a
    value such as a path is kept)."""
    match = re.search(r"(^|\s)#", line)
    return (line[: match.start()] if match else line).strip()


def read_config_file(path: Path) -> dict[str, str]:
    """``Key Value`` lines; ``#`` comments and blank lines skipped; the value may hold spaces."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(str(path), reason) from exc
    fields: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        content = _strip_comment(line)
        if not content:
            continue
        key, *rest = content.split(None, 1)
        if not rest:
            raise InputError(f"{path} line {number}", key, "has no value")
        fields[key] = rest[0].strip()
    return fields


def load_parameters(parameters: Any) -> tuple[dict[str, Any], str]:
    """Turn ``parameters`` into a field dict; returns it and a description of its source.

    A dict is taken as it is; a string starting with ``{`` is JSON; any other string (or path)
    names a config file.
    """
    if isinstance(parameters, dict):
        return dict(parameters), "the parameters dict"
    if isinstance(parameters, bytes):
        parameters = parameters.decode("utf-8", errors="replace")
    if isinstance(parameters, os.PathLike):
        return read_config_file(Path(parameters)), os.fspath(parameters)
    if not isinstance(parameters, str):
        raise ConfigError(repr(parameters), "parameters must be a JSON string, a dict or a config file path")
    text = parameters.strip()
    if text.startswith("{"):
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError("the JSON parameters", f"bad JSON: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError("the JSON parameters", "the top level is not an object")
        return loaded, "the JSON parameters"
    if not text:
        raise ConfigError("the parameters", "empty: give a JSON string, a dict or a config file path")
    return read_config_file(Path(parameters)), parameters


def _port(fields: dict[str, Any], key: str, source: str) -> int:
    value = fields[key]
    try:
        port = int(str(value).strip())
    except ValueError:
        raise ConnectionParamError(f"{key} in {source} is not a port number: {value!r}") from None
    if not 0 < port < 65536:
        raise ConnectionParamError(f"{key} in {source} is out of range: {port}")
    return port


def _path(fields: dict[str, Any], key: str, source: str) -> Path:
    """``fields[key]`` as a path, ``~`` expanded (InputError for ``~nosuchuser``)."""
    try:
        return expand_path(key, str(fields[key]).strip())
    except ValueError as exc:
        raise InputError(source, key, f"is unusable: {exc}") from None


def _override(value: Any, source: str) -> CertOverrideMode:
    if isinstance(value, CertOverrideMode):
        return value
    text = str(value).strip()
    if text.startswith("CertOverrideMode."):
        text = text.split(".", 1)[1]
    if text.upper() in CertOverrideMode.__members__:
        return CertOverrideMode[text.upper()]
    try:
        return CertOverrideMode(int(text))
    except ValueError:
        names = ", ".join(m.name for m in CertOverrideMode)
        raise InputError(source, "OverrideCerts", f"is not one of {names} (or 1–3): {value!r}") from None


def parse_parameters(parameters: Any) -> TvcmiParameters:
    """Parse and check ``parameters``; SDK errors name the field or the file."""
    fields, source = load_parameters(parameters)
    for key in REQUIRED_FIELDS:
        present = key in fields and (fields[key] is not None or key == "MqttKeepAlive")
        if not present or str(fields[key]).strip() == "":
            raise InputError(source, key)
    keepalive_raw = str(fields["MqttKeepAlive"]).strip()
    if keepalive_raw == "None":
        keepalive = DEFAULT_KEEPALIVE_S  # the manual allows 'None': the MQTT default then
    else:
        try:
            keepalive = int(keepalive_raw)
        except ValueError:
            reason = f"is not a number or 'None': {keepalive_raw!r}"
            raise InputError(source, "MqttKeepAlive", reason) from None
    client_name = str(fields.get("ClientName") or DEFAULT_CLIENT_NAME).strip()
    try:
        check_client_name(client_name)  # the one rule: it names files in CertFolder and the CSR's CN
    except ValueError as exc:
        raise InputError(source, "ClientName", f"is unusable: {exc}") from None
    override = _override(fields.get("OverrideCerts", CertOverrideMode.NOT_OVERRIDE), source)
    return TvcmiParameters(
        host=str(fields["MqttHost"]).strip(),
        provision_port=_port(fields, "MqttProvisionPort", source),
        port=_port(fields, "MqttPort", source),
        keepalive_s=keepalive,
        ca_file=_path(fields, "CaFile", source),
        cert_folder=_path(fields, "CertFolder", source),
        client_name=client_name,
        override=override,
        source=source,
    )
