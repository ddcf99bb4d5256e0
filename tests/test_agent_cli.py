"""`pibridge provision | ping | inventory | deprovision` end to end against the real emulator,
and their one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from agent_helpers import settings_for

from pibridge.agent import AgentClient, MetricDefinition
from pibridge.cli import main
from pibridge.testing import Emulator, free_port

CLI_TIMEOUT_S = 60


def _flags(emulator: Emulator, cert_folder: Path) -> list[str]:
    return ["--host", emulator.host, "--port", str(emulator.port), "--provision-port",
            str(emulator.provision_port), "--ca-file", str(emulator.ca_file),
            "--cert-folder", str(cert_folder)]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pibridge", *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S)


def test_provision_inventory_ping_deprovision(emulator: Emulator, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    flags = _flags(emulator, tmp_path / "certs")
    done = _run("provision", *flags)  # one real subprocess: the installed entry point
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Client is successfully provisioned. clientId ")
    assert main(["provision", *flags]) == 0
    assert capsys.readouterr().out.startswith("Client is already provisioned.")

    with AgentClient(settings_for(emulator, tmp_path / "certs")) as client:
        sid = client.create_sensor("Greenhouse").created_sensor_id
        mids = client.create_metrics(sid, [
            MetricDefinition("Temperature", value_unit="SI.Temperature.CELSIUS"),
            MetricDefinition("Light", value_type="double", value_annotation="lx")]).metric_ids
        client_id = client.client_id

    assert main(["inventory", "--json", *flags]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(s["sensorId"], s["name"]) for s in listed] == [(sid, "Greenhouse")]
    assert sorted(m["metricId"] for m in listed[0]["metrics"]) == sorted(mids.values())
    assert main(["inventory", *flags]) == 0
    table = capsys.readouterr().out
    assert "SI.Temperature.CELSIUS" in table and "double [lx]" in table and "Greenhouse" in table

    assert main(["ping", *flags]) == 0
    assert "answered in" in capsys.readouterr().out

    assert main(["deprovision", *flags]) == 0
    assert client_id in capsys.readouterr().out
    assert not (tmp_path / "certs" / "pibridge-key.pem").exists()
    assert client_id not in {c["clientId"] for c in emulator.dump()["clients"]}


def test_unreachable_agent_is_one_line_and_exit_1(emulator: Emulator, tmp_path: Path) -> None:
    flags = _flags(emulator, tmp_path / "certs")
    assert _run("provision", *flags).returncode == 0
    port = free_port()
    done = _run("ping", *flags, "--port", str(port))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"pibridge: cannot reach the agent at {emulator.host}:{port} "
                           "(connection refused): is the TeamViewer IoT Agent (or `pibridge emulator serve`) "
                           "running?\n")
    port = free_port()
    done = _run("provision", "--override", *flags, "--provision-port", str(port))
    assert done.returncode == 1 and "Traceback" not in done.stderr and len(done.stderr.splitlines()) == 1
    assert f"provisioning port at {emulator.host}:{port} (connection refused)" in done.stderr


def test_not_provisioned_and_rejected_certificates_say_what_to_do(
        emulator: Emulator, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = _flags(emulator, tmp_path / "certs")
    assert main(["ping", *flags]) == 1
    assert "run `pibridge provision` first" in capsys.readouterr().err
    assert main(["provision", *flags]) == 0
    with AgentClient(settings_for(emulator, tmp_path / "certs")) as client:
        client.deprovision()  # the agent revokes (before it answers); the files stay
    capsys.readouterr()
    assert main(["ping", *flags]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("pibridge: certificate ") and err.endswith("run `pibridge provision --override`")
    assert f"{emulator.host}:{emulator.port}" in err and len(err.splitlines()) == 1


def test_profile_settings_and_profile_errors(emulator: Emulator, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "site" / "greenhouse.toml"
    profile.parent.mkdir()
    profile.write_text(f'[agent]\nhost = "{emulator.host}"\nport = {emulator.port}\n'
                       f'provision_port = {emulator.provision_port}\nca_file = "{emulator.ca_file}"\n'
                       'cert_folder = "certs"\n')
    assert main(["provision", "--profile", str(profile)]) == 0
    assert (profile.parent / "certs" / "pibridge-cert.pem").is_file()  # relative to the profile
    assert main(["ping", "--profile", str(profile)]) == 0
    profile.write_text(profile.read_text() + 'provisioning = "sometimes"\n')
    capsys.readouterr()
    assert main(["ping", "--profile", str(profile)]) == 1
    err = capsys.readouterr().err
    assert f"{profile}:7: agent.provisioning: " in err and len(err.splitlines()) == 1
