"""`AgentClient(driven=True)`, the delivery's client: no network thread; its owner's thread reads
and writes the connection (`drive`, `result`), a request from another thread is written by the
thread doing the I/O, and a close or a timeout from another thread ends the owner's wait. Against
the real emulator."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import pytest

from pibridge.agent import AgentClient, AgentConnectionError, AgentSettings, Reply, RequestTimeout
from pibridge.bridge.inbox import Inbox
from pibridge.protocol import Op
from pibridge.testing import Emulator

WAIT_S = 20.0
SHORT_TIMEOUT_S = 0.3
#: A `drive` woken by another thread returns well before this; without the wake-up it would sit
#: out its whole wait (up to a keepalive share, 15 s): a bound on liveness, not a speed target.
WOKEN_WITHIN_S = 5.0


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


def when_inside_drive(client: AgentClient, action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` on another thread once the caller's thread waits inside `drive`."""
    session = client._session
    assert session is not None and session._io is not None
    io = session._io

    def run() -> None:
        deadline = time.monotonic() + WAIT_S
        while io.owner == 0 and time.monotonic() < deadline:
            threading.Event().wait(0.001)
        action()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def timed_drive(client: AgentClient, wake: socket.socket) -> float:
    started = time.monotonic()
    client.drive(WAIT_S, wake)
    return time.monotonic() - started


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
    other = when_inside_drive(driven, lambda: wake_w.send(b"\0"))
    assert timed_drive(driven, wake_r) < WOKEN_WITHIN_S
    other.join(WAIT_S)
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
    other = when_inside_drive(driven, lambda: futures.append(driven.ping_async()))
    assert timed_drive(driven, wake[0]) < WOKEN_WITHIN_S  # woken to write it (or by its answer)
    other.join(WAIT_S)
    drive_until(driven, futures[0], wake[0])
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


def test_a_session_closed_from_another_thread_ends_the_owners_drive(
        driven: AgentClient, wake: tuple[socket.socket, socket.socket]) -> None:
    """The deadline thread drops a connection this way: it takes the socket from the owner's
    select (waking it) and writes the DISCONNECT itself."""
    session = driven._session
    assert session is not None
    closer = when_inside_drive(driven, session.close)
    assert timed_drive(driven, wake[0]) < WOKEN_WITHIN_S
    closer.join(WAIT_S)
    assert not closer.is_alive() and session.wait_closed(WAIT_S)


def test_close_from_another_thread_fails_what_is_outstanding(driven: AgentClient) -> None:
    closer = threading.Thread(target=driven.close)
    closer.start()
    closer.join(WAIT_S)
    assert not closer.is_alive()
    with pytest.raises(AgentConnectionError):
        driven.ping_async().result(0)


def test_a_request_on_a_broken_connection_returns_and_the_owners_turn_fails_it(
        driven: AgentClient, wake: tuple[socket.socket, socket.socket]) -> None:
    """A request is published under the client's send lock, which the connection-lost handling
    takes: it must never write (and fail) right there, only queue; the owner's next turn finds
    the broken connection, fails what is outstanding, and the link connects again."""
    session = driven._session
    assert session is not None
    session._client.socket().shutdown(socket.SHUT_RDWR)  # the connection breaks under it
    futures: list[Future[Reply]] = []
    asker = threading.Thread(target=lambda: futures.append(driven.ping_async()))
    asker.start()
    asker.join(WAIT_S)
    assert not asker.is_alive(), "the request hung on the broken connection"
    drive_until(driven, futures[0], wake[0])
    assert isinstance(futures[0].exception(), AgentConnectionError)
    assert driven.wait_connected(WAIT_S)
    assert driven.ping().op is Op.PING


def test_an_answer_that_came_while_the_owner_was_busy_is_no_timeout(driven: AgentClient) -> None:
    """The owner reads nothing while it is busy elsewhere (a slow disk): when the deadline
    passes, the deadline thread reads what has arrived before it times anything out."""
    with driven.corked():  # written when it ends; nothing is read by this thread
        future = driven.ping_async(timeout=SHORT_TIMEOUT_S)
    assert not future.done()
    assert future.exception(WAIT_S) is None  # never driven here: read by the deadline thread


def test_an_inbox_put_from_another_thread_wakes_its_owner_and_one_of_its_own_costs_nothing() -> None:
    inbox = Inbox()
    inbox.bind()
    try:
        inbox.put(("own",))
        assert not inbox._wakeup.woken and inbox.wait(0.0) == ("own",)
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
