"""sd_notify over a real AF_UNIX datagram socket, as systemd listens for it."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pibridge.bridge.notify import SystemdNotifier

RECEIVE_TIMEOUT_S = 5.0


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket bound to a short path (sun_path holds 108 bytes: not pytest's tmp_path)."""
    directory = tempfile.mkdtemp(prefix="pbn-")
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(RECEIVE_TIMEOUT_S)
    yield sock, path
    sock.close()
    os.unlink(path)
    os.rmdir(directory)


def _message(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_ready_status_watchdog_reloading_stopping_arrive(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = SystemdNotifier.from_environment(env, unset=True)
    assert env == {}                                  # not inherited by child processes
    assert notifier.enabled and notifier.watchdog_timeout_s == 20.0 and notifier.watchdog_interval_s == 10.0

    assert notifier.ready("sampling 7 sensors\nqueue open")
    assert _message(sock) == {"READY": "1", "STATUS": "sampling 7 sensors queue open"}
    assert notifier.watchdog()
    assert _message(sock) == {"WATCHDOG": "1"}
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading("reloading profile")
    message = _message(sock)
    assert message["RELOADING"] == "1" and message["STATUS"] == "reloading profile"
    assert before <= int(message["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.stopping()
    assert _message(sock) == {"STOPPING": "1"}
    notifier.close()


def test_watchdog_if_due_pings_at_half_the_timeout(notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    now = [100.0]
    notifier = SystemdNotifier(path, 10.0, monotonic=lambda: now[0])
    assert notifier.watchdog_if_due()                 # the first turn pings at once
    assert _message(sock) == {"WATCHDOG": "1"}
    now[0] += 4.9
    assert not notifier.watchdog_if_due()
    now[0] += 0.1
    assert notifier.watchdog_if_due()
    assert _message(sock) == {"WATCHDOG": "1"}
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):              # nothing else was sent
        sock.recv(4096)
    notifier.close()


def test_abstract_namespace_socket() -> None:
    name = f"pibridge-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(RECEIVE_TIMEOUT_S)
        notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert _message(sock) == {"READY": "1"}
        notifier.close()


def test_outside_systemd_nothing_happens() -> None:
    notifier = SystemdNotifier.from_environment({})
    assert not notifier.enabled
    assert notifier.watchdog_interval_s is None
    assert not notifier.ready("x") and not notifier.watchdog() and not notifier.watchdog_if_due()
    assert not notifier.stopping() and not notifier.reloading()


@pytest.mark.parametrize("env, timeout", [
    ({"WATCHDOG_USEC": "3000000"}, 3.0),                         # no WATCHDOG_PID: meant for us
    ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, None),   # meant for another process
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": "0"}, None),
    ({}, None),
])
def test_watchdog_environment(env: dict[str, str], timeout: float | None) -> None:
    notifier = SystemdNotifier.from_environment({"NOTIFY_SOCKET": "/run/systemd/notify", **env})
    assert notifier.watchdog_timeout_s == timeout


@pytest.mark.parametrize("address", ["relative/path", "vsock:2:1234"])
def test_unusable_address_disables(address: str) -> None:
    assert not SystemdNotifier.from_environment({"NOTIFY_SOCKET": address}).enabled


def test_a_vanished_socket_is_logged_once_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = SystemdNotifier(str(tmp_path / "gone"), 1.0)
    assert not notifier.watchdog()
    assert not notifier.watchdog()
    assert not notifier.ready()
    assert len([r for r in caplog.records if "cannot notify systemd" in r.message]) == 1
    notifier.close()
