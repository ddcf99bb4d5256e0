"""`TVCMI_client` parameters (config file, JSON, dict) and the SDK error classes — no agent needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pibridge.tvcmi as tvcmi
from pibridge.tvcmi import (
    CertOverrideMode,
    ConfigError,
    ConnectionParamError,
    InputError,
    TvcmiError,
)
from pibridge.tvcmi.config import REQUIRED_FIELDS, parse_parameters

#: The manual's config-file example, verbatim (its indentation included).
MANUAL_CONFIG = """\
    MqttHost             localhost
    MqttProvisionPort    18883
    MqttPort             18884
    MqttKeepAlive        60
    CaFile               /var/lib/teamviewer-iot-agent/certs/TeamViewerAuthority.crt
    CertFolder           /home/pi/Downloads/certs
"""

MANUAL_JSON = {
    "MqttHost": "localhost", "MqttProvisionPort": "18883", "MqttPort": "18884", "MqttKeepAlive": "None",
    "CaFile": "/var/lib/teamviewer-iot-agent/certs/TeamViewerAuthority.crt", "CertFolder": "/tmp/certs",
}


def test_the_manuals_config_file_verbatim(tmp_path: Path) -> None:
    path = tmp_path / "tvcmi.conf"
    path.write_text(MANUAL_CONFIG)
    params = parse_parameters(str(path))
    assert (params.host, params.provision_port, params.port) == ("localhost", 18883, 18884)
    assert params.keepalive_s == 60
    assert params.ca_file == Path("/var/lib/teamviewer-iot-agent/certs/TeamViewerAuthority.crt")
    assert params.cert_folder == Path("/home/pi/Downloads/certs")
    assert params.client_name == "TVCMI_client" and params.override is CertOverrideMode.NOT_OVERRIDE
    assert parse_parameters(path) == parse_parameters(str(path))  # a Path works too


def test_config_file_comments_tabs_and_values_with_spaces(tmp_path: Path) -> None:
    path = tmp_path / "tvcmi.conf"
    path.write_text("# TeamViewer IoT\n\nMqttHost\tlocalhost   # the agent\n  MqttProvisionPort 18883\n"
                    "MqttPort\t\t 18884\nMqttKeepAlive None\nCaFile /opt/ca dir/ca#1.crt\n"
                    "CertFolder   /tmp/my certs\nClientName  My Pi\nOverrideCerts SMART\n")
    params = parse_parameters(str(path))
    assert params.host == "localhost" and params.port == 18884
    assert params.ca_file == Path("/opt/ca dir/ca#1.crt")  # '#' inside a value is not a comment
    assert params.cert_folder == Path("/tmp/my certs") and params.client_name == "My Pi"
    assert params.override is CertOverrideMode.SMART


def test_the_manuals_json_string_with_string_ports_and_keepalive_none() -> None:
    params = parse_parameters(json.dumps(MANUAL_JSON))
    assert (params.provision_port, params.port, params.keepalive_s) == (18883, 18884, 60)


@pytest.mark.parametrize("value", [CertOverrideMode.OVERRIDE, "OVERRIDE", "CertOverrideMode.OVERRIDE", 1,
                                   "1"])
def test_override_certs_as_member_name_or_number(value: object) -> None:
    fields = {**MANUAL_JSON, "MqttPort": 18884, "MqttProvisionPort": 18883, "OverrideCerts": value}
    assert parse_parameters(fields).override is CertOverrideMode.OVERRIDE


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_a_missing_field_raises_input_error_naming_it(field: str, tmp_path: Path) -> None:
    fields = {k: v for k, v in MANUAL_JSON.items() if k != field}
    with pytest.raises(InputError, match=field) as caught:
        parse_parameters(json.dumps(fields))
    assert caught.value.field == field
    path = tmp_path / "tvcmi.conf"
    path.write_text("".join(f"{k} {v}\n" for k, v in fields.items()))
    with pytest.raises(InputError, match=f"{field} is missing in the input at {path}"):
        parse_parameters(str(path))


def test_a_key_without_value_names_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "tvcmi.conf"
    path.write_text(MANUAL_CONFIG.replace("MqttPort             18884", "MqttPort"))
    with pytest.raises(InputError, match=r"MqttPort has no value .*tvcmi.conf line 3"):
        parse_parameters(str(path))


def test_bad_json_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="bad JSON"):
        parse_parameters('{"MqttHost": "localhost",')


@pytest.mark.parametrize("make", [lambda d: d / "missing.conf", lambda d: d])
def test_an_unreadable_config_file_raises_config_error_naming_it(make, tmp_path: Path) -> None:
    path = make(tmp_path)
    with pytest.raises(ConfigError, match=str(path)):
        parse_parameters(str(path))


def test_parameters_of_another_type_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_parameters(18884)


@pytest.mark.parametrize(("field", "value"), [("MqttPort", "eighteen"), ("MqttProvisionPort", 70000)])
def test_an_unusable_port_raises_connection_param_error_naming_it(field: str, value: object) -> None:
    with pytest.raises(ConnectionParamError, match=field):
        parse_parameters({**MANUAL_JSON, field: value})


@pytest.mark.parametrize(("field", "value"), [("MqttKeepAlive", "soon"), ("OverrideCerts", "ALWAYS"),
                                              ("ClientName", "a/b")])
def test_bad_optional_values_raise_input_error_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(InputError, match=field):
        parse_parameters({**MANUAL_JSON, field: value})


def test_the_sdk_error_classes_come_from_the_package() -> None:
    names = ["CallbackError", "TLSError", "ConnectionParamError", "ConnectionError", "FileError",
             "ConfigError", "InputError", "DirectoryError", "KeyGenerationError", "KeyCertificateError"]
    for name in names:
        cls = getattr(tvcmi, name)
        assert issubclass(cls, TvcmiError) and cls is not TvcmiError, name
    assert tvcmi.ConnectionError is not ConnectionError  # the SDK's own, not the builtin
    error = TvcmiError(5, "boom")
    assert (error.error_code, error.message, str(error)) == (5, "boom", "boom")
    assert tvcmi.ConnectionError(3).error_code == 3
