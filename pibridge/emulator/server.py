"""``pibridge emulator serve``: PKI, database, two mosquitto children and the front, core; signals;
the ready line.

The provisioning port and the API port are the front's (`pibridge.emulator.front`: TLS and the
client-id rule), which brings each client to one of two mosquitto processes, so that a client id
used on one port never meets a session of the other (`pibridge.emulator.broker`); the core is
connected to both brokers.

Signals (to the serve process):

    SIGINT/SIGTERM  stop: core drained and committed, brokers and front stopped, exit 0
    SIGUSR1         restart brokers and front in place (same ports and state); prints the ready line again
    SIGUSR2         wipe the inventory (clients and CA stay); prints ``wiped``
    SIGHUP          make brokers and front re-read their configuration (the front: and the CRL)

The ready line (stdout, flushed) is ``ready host=H provision_port=P port=Q ca_file=F state_dir=D
sockets=S`` (S: the directory of the private sockets); it is printed once both ports answer TLS
and the core is subscribed."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import shutil
import signal
import sqlite3
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pibridge import mqtt
from pibridge import protocol as p
from pibridge.emulator.broker import (
    UNIX_PATH_MAX,
    Broker,
    BrokerConfig,
    BrokerError,
    FrontProcess,
    check_port,
    find_mosquitto,
)
from pibridge.emulator.channel import CoreChannel, CoreLink
from pibridge.emulator.core import CORE_FILTERS, Core, Injection
from pibridge.emulator.faults import AnswerFault
from pibridge.emulator.front import FrontConfig, FrontListener, Role
from pibridge.emulator.pki import Authority, PkiError
from pibridge.emulator.store import DB_NAME, Store, StoreCorrupt
from pibridge.paths import DirectoryError, prepare_directory

if TYPE_CHECKING:
    from pibridge.web.dashboard import Dashboard

log = logging.getLogger(__name__)

LOCK_NAME = "serve.lock"
#: The core's private sockets on the API broker and on the provision broker.
CORE_SOCKET_NAME = "core.sock"
PROVISION_CORE_SOCKET_NAME = "provision-core.sock"
#: The sockets where the front brings clients of the API port and of the provision port.
CLIENT_SOCKET_NAME = "api-clients.sock"
PROVISION_CLIENT_SOCKET_NAME = "prov-clients.sock"  # short: it must fit where the core's fit
#: The private sockets' directory in the state dir (owner only).
SOCKET_DIR_NAME = "sockets"
#: The core's filters on the provision broker, and the prefix of the answers it publishes there.
PROVISION_FILTERS = p.PROVISION_TOPICS
PROVISION_ANSWERS = p.CERT_BACK_FILTER.removesuffix("#")
#: The core's filters on the API broker: every operation's request topic.
API_FILTERS = tuple(f for f in CORE_FILTERS if f not in PROVISION_FILTERS)
#: Seconds for the brokers and the front to answer, and for the core to connect, at (re)start.
STARTUP_TIMEOUT_S = 15.0
#: While the core connects at startup, how often the children are checked for having exited (s).
BROKER_CHECK_S = 0.1
#: Core link reconnect backoff: the broker is local, retry fast.
CORE_BACKOFF = mqtt.Backoff(initial=0.02, cap=0.5, factor=2.0, jitter=0.1)
#: Seconds between checks that the brokers and the front are still alive.
WATCH_INTERVAL_S = 0.5
#: QoS of the core's subscription on its private Unix socket: 0 spares a PUBACK per request. It
#: loses nothing QoS 1 would keep: the session is clean, so a message in flight when the core's
#: connection drops is lost either way, and mosquitto drops QoS 0 to a connected client only
#: beyond max_queued_messages (`broker.MAX_QUEUED_MESSAGES`). The core's answers stay QoS 1.
CORE_SUBSCRIBE_QOS = 0


class ServeError(Exception):
    """A reason not to start (one line for the CLI)."""


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "pibridge" / "emulator"


@dataclass
class Options:
    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 18884
    provision_port: int = 18883
    strict_ids: bool = False
    injections: list[Injection] = field(default_factory=list)
    answer_faults: list[AnswerFault] = field(default_factory=list)
    seed: int | None = None
    #: ``--http HOST:PORT``: the dashboard's address (None: no web server, nothing of it imported)
    http: str | None = None


class StateLock:
    """An flock on ``DIR/serve.lock`` held while serving (it also holds the pid, for messages)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def _socket_dir(state_dir: Path) -> tuple[Path, Path | None]:
    """Where the private sockets go (the core's, and where the front brings clients):
    `SOCKET_DIR_NAME` in the state dir, or a short temp dir (also returned, to be removed) if
    the state dir is too deep for a socket path. Either is 0700 whatever the umask: the core's
    sockets have no ACL and the API broker's client socket trusts the username it is given, so
    only the owner may reach them."""
    longest = max(CORE_SOCKET_NAME, PROVISION_CORE_SOCKET_NAME, CLIENT_SOCKET_NAME,
                  PROVISION_CLIENT_SOCKET_NAME, key=len)
    inside = state_dir.resolve() / SOCKET_DIR_NAME
    if len(str(inside / longest)) <= UNIX_PATH_MAX:
        inside.mkdir(mode=0o700, exist_ok=True)
        os.chmod(inside, 0o700)
        return inside, None
    tmp = Path(tempfile.mkdtemp(prefix="pibridge-"))  # 0700
    return tmp, tmp


def core_endpoint(socket_path: Path, ca_file: Path, cert_file: Path, key_file: Path) -> mqtt.Endpoint:
    """A connection on a broker's private socket as the holder of ``cert_file`` (its CN is the id)."""
    return mqtt.Endpoint(unix_socket=str(socket_path), tls=mqtt.TlsFiles(ca_file, cert_file, key_file))


def ready_line(options: Options, ca_file: Path, socket_dir: Path) -> str:
    return (f"ready host={options.host} provision_port={options.provision_port} port={options.port} "
            f"ca_file={ca_file} state_dir={options.state_dir} sockets={socket_dir}")


def _reason(exc: OSError) -> str:
    """An OSError as 'file: reason' (no errno numbers, no traceback)."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}"


def serve(options: Options) -> int:
    """Serve until SIGINT/SIGTERM; every reason not to start or to stop is one `ServeError` line."""
    if options.port == options.provision_port:
        raise ServeError(f"--port and --provision-port must differ (both {options.port})")
    try:
        for port in (options.provision_port, options.port):
            check_port(options.host, port)
    except BrokerError as exc:
        raise ServeError(str(exc)) from None
    state_dir = options.state_dir
    try:
        prepare_directory(state_dir, "state directory")
    except DirectoryError as exc:
        raise ServeError(str(exc)) from None
    lock = StateLock(state_dir)
    try:
        locked = lock.acquire()
    except OSError as exc:
        raise ServeError(f"cannot write in the state directory {state_dir} ({_reason(exc)})") from None
    if not locked:
        raise ServeError(f"an emulator (pid {lock.holder()}) already serves {state_dir}")
    try:
        return _serve_locked(options, lock)
    except OSError as exc:  # a state file that cannot be written or read (full disk, read-only, …)
        raise ServeError(f"cannot use the state directory {state_dir} ({_reason(exc)})") from None
    finally:
        lock.release()


def _open_store(path: Path) -> Store:
    try:
        return Store(path)
    except sqlite3.OperationalError as exc:  # cannot open or write it: permissions, full disk
        raise ServeError(f"cannot open the state database {path} ({exc})") from None
    except sqlite3.DatabaseError as exc:
        raise ServeError(f"the state database {path} is unusable ({exc}); move it away to start "
                         "afresh") from None


def _serve_locked(options: Options, lock: StateLock) -> int:
    binary = find_mosquitto()
    if binary is None:
        raise ServeError("mosquitto not found (searched PATH and /usr/sbin); install it, e.g. "
                         "'apt-get install mosquitto'")
    state_dir = options.state_dir
    db_path = state_dir / DB_NAME
    # everything acquired below is released by `cleanup`, also when a later step fails
    with contextlib.ExitStack() as cleanup:
        store = _open_store(db_path)
        cleanup.callback(store.close)
        try:
            authority = Authority(state_dir, allow_new_ca=not store.has_clients())
            # the revocation list always says what the database says (a batch that failed after
            # writing it, a lost file)
            authority.write_crl(store.revoked_serials())
            core = Core(store, authority, strict_ids=options.strict_ids, injections=options.injections,
                        answer_faults=options.answer_faults,
                        seed=options.seed)
        except PkiError as exc:
            raise ServeError(str(exc)) from None
        except StoreCorrupt as exc:
            raise ServeError(f"the state database {db_path} is corrupt: {exc}; repair it or move it away "
                             "to start afresh") from None
        except sqlite3.DatabaseError as exc:
            raise ServeError(f"the state database {db_path} is unusable ({exc}); move it away to start "
                             "afresh") from None
        dashboard = _open_dashboard(options, db_path)
        if dashboard is not None:
            cleanup.callback(dashboard.stop)
        socket_dir, socket_tmp = _socket_dir(state_dir)
        if socket_tmp is not None:
            cleanup.callback(shutil.rmtree, socket_tmp, ignore_errors=True)
        pki = authority.paths
        brokers: list[Broker] = []  # both mosquittos, then the front (started in this order)
        links: list[CoreLink] = []
        listeners: list[FrontListener] = []
        for role, port, client_socket, core_socket, filters, answers in (
                (Role.API, options.port, CLIENT_SOCKET_NAME, CORE_SOCKET_NAME, API_FILTERS, None),
                (Role.PROVISION, options.provision_port, PROVISION_CLIENT_SOCKET_NAME,
                 PROVISION_CORE_SOCKET_NAME, PROVISION_FILTERS, PROVISION_ANSWERS)):
            config = BrokerConfig(role, socket_dir / client_socket, socket_dir / core_socket, pki.ca_cert,
                                  pki.server_cert, pki.server_key, state_dir)
            brokers.append(Broker(binary, config))
            cleanup.callback(brokers[-1].stop)
            links.append(CoreLink(core_endpoint(config.core_socket, pki.ca_cert, pki.core_cert, pki.core_key),
                                  tuple(filters), answers))
            listeners.append(FrontListener(role, options.host, port, config.client_socket))
        front = FrontProcess(FrontConfig(tuple(listeners), pki.ca_cert, pki.server_cert, pki.server_key,
                                         pki.crl, state_dir))
        brokers.append(front)
        cleanup.callback(front.stop)
        core.on_revoked = front.reload  # the front checks client certificates against the CRL
        events: queue.SimpleQueue[int] = queue.SimpleQueue()
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)
        previous = {sig: signal.signal(sig, lambda signum, frame: events.put(signum)) for sig in handled}
        for sig, handler in previous.items():
            cleanup.callback(signal.signal, sig, handler)
        channel = CoreChannel(core, links, qos=CORE_SUBSCRIBE_QOS,
                              client_id=mqtt.new_client_id("pibridge-emulator-core"),
                              backoff=CORE_BACKOFF, connect_timeout=5.0)
        cleanup.callback(channel.stop)

        def start_brokers() -> None:
            seen = channel.up_count
            for broker in brokers:  # all start at once; then each is waited for
                broker.start()
            for broker in brokers:
                broker.wait_ready(STARTUP_TIMEOUT_S)
            channel.start()
            # a broker may answer on its port and still exit at its next listener (its private
            # socket taken): that is the reason to give, not the core's failing connections
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            while not channel.wait_up(seen, BROKER_CHECK_S):
                for broker in brokers:
                    if not broker.alive():
                        raise BrokerError(f"{broker.config.title} exited during "
                                          f"startup ({broker.exit_reason()})")
                if time.monotonic() > deadline:
                    raise BrokerError(f"the emulator core cannot connect to {socket_dir / CORE_SOCKET_NAME} "
                                      f"and {socket_dir / PROVISION_CORE_SOCKET_NAME}")
            print(ready_line(options, authority.paths.ca_cert, socket_dir), flush=True)

        def stop_brokers() -> None:
            for broker in brokers:
                broker.stop()

        try:
            start_brokers()
            if dashboard is not None:
                dashboard.start()
                print(f"dashboard {dashboard.url}", flush=True)
            while True:
                try:
                    signum = events.get(timeout=WATCH_INTERVAL_S)
                except queue.Empty:
                    for broker in brokers:
                        if not broker.alive():
                            raise ServeError(f"{broker.config.title} exited "
                                             f"unexpectedly ({broker.exit_reason()})") from None
                    continue
                if signum in (signal.SIGINT, signal.SIGTERM):
                    break
                if signum == signal.SIGUSR1:
                    stop_brokers()
                    start_brokers()
                elif signum == signal.SIGUSR2:
                    channel.call(core.wipe)
                    print("wiped", flush=True)
                elif signum == signal.SIGHUP:
                    for broker in brokers:
                        broker.reload()
            return 0
        except BrokerError as exc:
            raise ServeError(str(exc)) from exc


def _open_dashboard(options: Options, db_path: Path) -> Dashboard | None:
    """The dashboard, bound now (a taken port is a reason not to start); read-only on the
    database through its own connection, on its own threads: the core never waits on it."""
    if not options.http:
        return None
    from pibridge.web.address import AddressError, parse_address
    from pibridge.web.dashboard import Dashboard

    try:
        host, port = parse_address(options.http)
        from pibridge.web.address import is_loopback

        if not is_loopback(host):
            log.warning("the dashboard on %s is readable by anyone who reaches it (no token)", options.http)
        return Dashboard((host, port), db_path)
    except AddressError as exc:
        raise ServeError(f"--http: {exc}") from None
    except OSError as exc:
        raise ServeError(f"cannot serve the dashboard on {options.http}: {exc.strerror or exc}") from None


def wipe(state_dir: Path) -> None:
    """Delete every sensor, metric and value; keep clients and CA. Refuses while serving."""
    lock = StateLock(state_dir)
    if not (state_dir / DB_NAME).exists():
        return
    try:
        locked = lock.acquire()
    except OSError as exc:
        raise ServeError(f"cannot write in the state directory {state_dir} ({_reason(exc)})") from None
    if not locked:
        raise ServeError(f"the emulator (pid {lock.holder()}) is running on {state_dir}; stop it first")
    try:
        store = _open_store(state_dir / DB_NAME)
        try:
            store.begin()
            store.wipe_inventory()
            store.commit()
        except sqlite3.Error as exc:
            raise ServeError(f"cannot wipe {state_dir / DB_NAME} ({exc})") from None
        finally:
            with contextlib.suppress(sqlite3.Error):
                store.rollback()
                store.close()
    finally:
        lock.release()
