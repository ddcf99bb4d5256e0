"""``pibridge emulator serve|dump|wipe`` as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pibridge import mqtt
from pibridge.testing import Emulator, free_port

CLI = [sys.executable, "-m", "pibridge", "emulator"]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def test_ready_line_and_clean_sigterm_exit(tmp_path: Path) -> None:
    port, pport = free_port(), free_port()
    proc = subprocess.Popen([*CLI, "serve", "--state-dir", str(tmp_path), "--port", str(port),
                             "--provision-port", str(pport)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "ready" in line and str(port) in line and str(pport) in line
        for p in (port, pport):
            socket.create_connection(("127.0.0.1", p), timeout=5).close()
        children = _children(proc.pid)
        assert len(children) == 3, "the API broker, the provision broker and the front"
        assert (tmp_path / "ca.crt").exists() and (tmp_path / "crl.pem").exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    for child in children:
        assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text()
    assert not (tmp_path / "sockets" / "core.sock").exists()
    assert not (tmp_path / "sockets" / "provision-core.sock").exists()
    assert stat.S_IMODE((tmp_path / "sockets").stat().st_mode) == 0o700   # no ACL there: owner only


def test_a_state_dir_too_deep_for_socket_paths_serves_and_is_reachable_privately(tmp_path: Path) -> None:
    """The private sockets go to a short temp dir then; the ready line names it, so tools and
    tests (`private_endpoint`, `drop_core_session`) find it; it goes with the emulator."""
    from pibridge.agent import AgentClient, AgentSettings, provision

    deep = tmp_path / ("d" * 60) / ("e" * 60)
    emulator = Emulator(deep)
    emulator.start()
    try:
        sockets = Path(emulator.ready_line.rstrip().partition(" sockets=")[2])
        assert sockets.is_dir() and not sockets.is_relative_to(deep)
        assert stat.S_IMODE(sockets.stat().st_mode) == 0o700
        settings = AgentSettings(host=emulator.host, port=emulator.port,
                                 provision_port=emulator.provision_port, ca_file=emulator.ca_file,
                                 cert_folder=tmp_path / "certs")
        provision(settings)
        with AgentClient(settings) as client:
            assert client.ping()           # the core is connected through the temp dir's sockets
        observer = mqtt.MqttSession(emulator.private_endpoint(), client_id=mqtt.new_client_id("t"),
                                    on_message=lambda topic, payload: None)
        observer.open(10.0)                # found through the ready line
        observer.close()
    finally:
        emulator.stop()
    assert not sockets.exists()


def test_port_taken_is_refused_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        result = subprocess.run([*CLI, "serve", "--state-dir", str(tmp_path), "--port", str(taken),
                                 "--provision-port", str(free_port())], capture_output=True, text=True,
                                timeout=30)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and str(taken) in result.stderr and "in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_corrupt_state_database_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "emulator.db").write_bytes(b"this is not an SQLite database" * 100)
    result = subprocess.run([*CLI, "serve", "--state-dir", str(tmp_path), "--port", str(free_port()),
                             "--provision-port", str(free_port())], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and "emulator.db" in result.stderr


def test_mosquitto_missing_is_refused_in_one_line(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(Path(sys.executable).parent), PIBRIDGE_MOSQUITTO=str(tmp_path / "none"))
    result = subprocess.run([*CLI, "serve", "--state-dir", str(tmp_path), "--port", str(free_port()),
                             "--provision-port", str(free_port())], capture_output=True, text=True,
                            timeout=30, env=env)
    assert result.returncode != 0
    assert result.stderr.count("\n") == 1 and "mosquitto not found" in result.stderr


def test_find_mosquitto_searches_path_then_sbin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pibridge.emulator import broker

    monkeypatch.delenv(broker.MOSQUITTO_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(broker, "FALLBACK_DIRS", ())
    assert broker.find_mosquitto() is None
    fake = tmp_path / "mosquitto"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert broker.find_mosquitto() == str(fake)


def test_dump_and_wipe_cli(tmp_path: Path) -> None:
    emu = Emulator(tmp_path)
    emu.start()
    try:
        emu.issue_client_certificate(tmp_path / "c")
        running = subprocess.run([*CLI, "wipe", "--state-dir", str(emu.state_dir)], capture_output=True,
                                 text=True, timeout=30)
        assert running.returncode != 0 and "running" in running.stderr and running.stderr.count("\n") == 1
        dumped = subprocess.run([*CLI, "dump", "--state-dir", str(emu.state_dir)], capture_output=True,
                                text=True, timeout=30, check=True)
        assert json.loads(dumped.stdout)["clients"][0]["sensors"] == []
    finally:
        assert emu.stop() == 0
    stopped = subprocess.run([*CLI, "wipe", "--state-dir", str(emu.state_dir)], capture_output=True,
                             text=True, timeout=30)
    assert stopped.returncode == 0, stopped.stderr
    assert len(emu.dump()["clients"]) == 1


def test_dump_reads_a_read_only_state_dir(tmp_path: Path) -> None:
    """`emulator dump` only reads: it works on a read-only state dir (a real read-only tmpfs)."""
    where = tmp_path / "ro"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(where)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        emu = Emulator(where / "state")
        emu.start()
        try:
            cid = emu.issue_client_certificate(tmp_path / "c")[0]
        finally:
            assert emu.stop() == 0
        remount = subprocess.run(["mount", "-o", "remount,ro", str(where)], capture_output=True, text=True)
        assert remount.returncode == 0, remount.stderr
        before = sorted(p.name for p in emu.state_dir.iterdir())
        dumped = subprocess.run([*CLI, "dump", "--state-dir", str(emu.state_dir)], capture_output=True,
                                text=True, timeout=30)
        assert dumped.returncode == 0, dumped.stderr
        assert [c["clientId"] for c in json.loads(dumped.stdout)["clients"]] == [cid]
        assert emu.error_reports() == []
        assert sorted(p.name for p in emu.state_dir.iterdir()) == before
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


def test_core_cost_benchmark_runs() -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench" / "core_cost.py"
    result = subprocess.run([sys.executable, str(script), "--batches", "1"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Core.process CPU per push: median" in result.stdout
