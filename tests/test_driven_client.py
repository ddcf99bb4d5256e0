"""`AgentClient(driven=True)`, the delivery's client: no network thread; its owner's thread reads
and writes the connection (`drive`, `result`), a request from another thread is written by the
thread doing the I/O, and a close or a timeout from another thread ends the owner's wait. Against
the real emulator."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from pibridge.agent import AgentClient, AgentConnectionError, AgentSettings, Reply, RequestTimeout
from pibridge.bridge.inbox import Inbox
from pibridge.protocol import Op
from pibridge.testing import Emulator

WAIT_S = 20.0
SHORT_TIMEOUT_S = 0.3


@pytest.fixture
def driven(settings: AgentSettings) -> Iterator[AgentClient]:
    client = AgentClient(settings, request_timeout=WAIT_S, driven=True)
    client.connect(WAIT_S)
    yield client
    client.close()


@pytest.fixture
def wake() -> Iterator[tuple[socket.socket, socket.socket]]:
    pair = socket.socketpair()
    yield pair
    for end in pair:
        end.close()


def network_threads(client: AgentClient) -> list[str]:
    return [t.name for t in threading.enumerate() if client.mqtt_client_id in t.name]


def settled_on(future: Future[Reply]) -> list[int]:
    """Records the thread that settles ``future``."""
    threads: list[int] = []
    future.add_done_callback(lambda _: threads.append(threading.get_ident()))
    return threads


def drive_until(client: AgentClient, future: Future[Reply], wake: socket.socket) -> None:
    while not future.done():
        client.drive(WAIT_S, wake)


def test_answers_are_read_on_the_owners_thread_with_no_network_thread(driven: AgentClient) -> None:
    assert network_threads(driven) == []  # paho names its network thread after the MQTT client id
    future = driven.ping_async()
    settled = settled_on(future)
    assert driven.result(future, WAIT_S).op is Op.PING
    assert settled == [threading.get_ident()]
    # and the blocking forms work the same way
    sensor_id = driven.create_sensor("Driven").created_sensor_id
    assert [s["sensorId"] for s in driven.list_sensors().value] == [sensor_id]


def test_drive_returns_when_its_wake_socket_is_written(driven: AgentClient,
                                                      wake: tuple[socket.socket, socket.socket]) -> None:
    wake_r, wake_w = wake
    wake_w.send(b"\0")
    driven.drive(WAIT_S, wake_r)  # returns at once instead of after WAIT_S
    assert wake_r.recv(1) == b"\0"


def test_a_request_from_another_thread_while_the_owner_holds_the_connection_is_queued_and_written(
        driven: AgentClient, wake: tuple[socket.socket, socket.socket]) -> None:
    """The other thread never waits for the owner (whose callbacks take the client's locks: a
    wait could deadlock); the owner's next turn writes it, and reads its answer."""
    session = driven._session
    assert session is not None and session._io is not None
    futures: list[Future[Reply]] = []
    with session._io.lock:  # as while the owner is inside `drive`
        other = threading.Thread(target=lambda: futures.append(driven.ping_async()))
        other.start()
        other.join(WAIT_S)
        assert not other.is_alive(), "the request waited for the owner's turn"
        assert session._client.want_write(), "written by a thread that does not hold the connection"
    (future,) = futures
    settled = settled_on(future)
    drive_until(driven, future, wake[0])
    assert future.exception() is None and settled == [threading.get_ident()]


def test_a_request_from_another_thread_wakes_the_owner_inside_drive(
        driven: AgentClient, wake: tuple[socket.socket, socket.socket]) -> None:
    futures: list[Future[Reply]] = []
    asked = threading.Event()

    def ask() -> None:
        asked.wait(WAIT_S)
        futures.append(driven.ping_async())

    other = threading.Thread(target=ask)
    other.start()
    asked.set()
    while not futures or not futures[0].done():
        driven.drive(WAIT_S, wake[0])  # the queued request's wake-up, then its answer, end a turn
    other.join(WAIT_S)
    assert futures[0].exception() is None


def test_a_timeout_drops_the_connection_while_the_owner_drives_and_it_comes_back(
        driven: AgentClient, emulator: Emulator, wake: tuple[socket.socket, socket.socket]) -> None:
    emulator.pause_core()
    try:
        future = driven.ping_async(timeout=SHORT_TIMEOUT_S)
        drive_until(driven, future, wake[0])  # the deadline thread settles it and closes the connection
        assert isinstance(future.exception(), RequestTimeout)
    finally:
        emulator.resume_core()
    assert driven.wait_connected(WAIT_S)  # the link reconnected and fenced on its own thread
    assert driven.ping().op is Op.PING


def test_close_from_another_thread_ends_the_owners_drive(driven: AgentClient,
                                                         wake: tuple[socket.socket, socket.socket]) -> None:
    future = driven.ping_async()
    drive_until(driven, future, wake[0])
    closer = threading.Thread(target=driven.close)
    closer.start()
    while driven.connected:
        driven.drive(WAIT_S, wake[0])
    closer.join(WAIT_S)
    assert not closer.is_alive()
    with pytest.raises(AgentConnectionError):
        driven.ping_async().result(0)


def test_an_inbox_put_from_another_thread_wakes_its_owner_and_one_of_its_own_costs_nothing() -> None:
    inbox = Inbox()
    inbox.bind()
    try:
        inbox.put(("own",))
        assert not inbox._signalled and inbox.wait(0.0) == ("own",)
        other = threading.Thread(target=inbox.put, args=(("other",),))
        other.start()
        assert inbox.wait(WAIT_S) == ("other",)  # whether put before or during the wait
        other.join(WAIT_S)
        assert inbox.get_nowait() is None
        assert inbox.get(0.0) is None
    finally:
        inbox.close()


def test_pushes_sent_corked_go_out_in_one_write_and_are_all_answered(
        driven: AgentClient, wake: tuple[socket.socket, socket.socket]) -> None:
    session = driven._session
    assert session is not None
    client = session._client
    writes: list[int] = []
    send = client._sock_send

    def counting_send(buf: bytes | bytearray) -> int:
        writes.append(len(buf))
        return send(buf)

    client._sock_send = counting_send  # type: ignore[method-assign]
    with driven.corked():
        futures = [driven.ping_async() for _ in range(5)]
        assert writes == [] and client.want_write()  # queued, not written yet
    assert len(writes) == 1 and not client.want_write()
    for future in futures:
        drive_until(driven, future, wake[0])
        assert future.exception() is None


def test_coalesced_publishes_survive_partial_writes_in_order() -> None:
    """`_PahoClient._packet_write` joins whole PUBLISH packets into one send; a socket that takes
    only part (a small send buffer) leaves the rest queued at the right position."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from pibridge.mqtt import _DrivenIo, _PahoClient

    ours, peer = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.setblocking(False)
    client = _PahoClient(CallbackAPIVersion.VERSION2, client_id="coalesce", protocol=paho.MQTTv311)
    client.io = _DrivenIo()
    client._sock = ours  # as paho holds its connection's socket
    try:
        packets, infos = [], []
        for n in range(40):
            payload = bytes([n]) * 3000
            header = bytes([paho.PUBLISH, 0x80 | ((2 + 1 + len(payload)) & 0x7F),
                            (2 + 1 + len(payload)) >> 7])
            packet = header + b"\x00\x01t" + payload
            info = paho.MQTTMessageInfo(n + 1)
            client._queue_only(paho.PUBLISH, packet, n + 1, 0, info)
            packets.append(packet)
            infos.append(info)
        received = bytearray()
        expected = b"".join(packets)
        while client.want_write() or len(received) < len(expected):
            if client.want_write():
                client._packet_write()
            received += peer.recv(1 << 20)
        assert bytes(received) == expected
        assert all(info.is_published() for info in infos)
    finally:
        client.io.close()
        ours.close()
        peer.close()
