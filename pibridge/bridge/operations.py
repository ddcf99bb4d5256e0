"""The running bridge's window to whoever operates it, in one object the service's main loop
drives: systemd (`SystemdNotifier`), the status file (`StatusWriter`), the terminal (the live
view or plain log lines) and SIGHUP reloads (`ReloadSignal` + `ProfileReloader`). The service
owns the data path; this owns telling the world about it.

    ops = Operations.for_service(profile, tracker)       # main thread, before sampling starts
    ops.started("sampling 7 sensors", refresh=feed)      # queue open, sampling begun: READY=1
    while running:
        ...
        ops.tick(alive=scheduler.alive and delivery.alive, on_reload=service.apply_reload,
                 refresh=feed)
    ops.stopping()                                       # STOPPING=1, status file removed

`tick` is cheap when nothing is due (a few clock reads): call it every main-loop turn, at least
when `next_turn_in` says (the view redraws once a second; the watchdog needs a ping every
WatchdogSec/2; the status file is rewritten at most every `WRITE_INTERVAL_S`, and every
`HEARTBEAT_S` by an idle loop). ``refresh`` (the service's call of `feed_status`) runs only when
the status file or the view is due, so the queue's statistics query runs at most once a second
on a terminal and once every `WRITE_INTERVAL_S` without one.

`feed_status` is the one adapter from the running parts' own counters (the scheduler's
``stats()``, the delivery's ``status()``, which carries the queue's ``stats()``) to the tracker.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pibridge.bridge.liveview import LogLinesView, TerminalView, open_view
from pibridge.bridge.notify import SystemdNotifier
from pibridge.bridge.reload import ProfileReloader, ReloadResult, ReloadSignal
from pibridge.bridge.status import FAILING, OK, STARTING, StatusTracker, StatusWriter
from pibridge.profile import Profile

if TYPE_CHECKING:
    from pibridge.bridge.delivery import DeliveryStatus

log = logging.getLogger(__name__)


class Operations:
    """See the module docstring. Every part is injectable (tests, or a service that builds its
    own); `for_service` builds the real ones."""

    def __init__(self, tracker: StatusTracker, notifier: SystemdNotifier, writer: StatusWriter,
                 view: TerminalView | LogLinesView, reloader: ProfileReloader,
                 reload_signal: ReloadSignal) -> None:
        self.tracker, self.notifier, self.writer = tracker, notifier, writer
        self.view, self.reloader, self.reload_signal = view, reloader, reload_signal
        self._captured: list[tuple[logging.Logger, logging.Handler]] = []
        self._view_handler: logging.Handler | None = None
        self._refused_file: tuple[int, int, int] | None = None   # the refused profile's stat

    @classmethod
    def for_service(cls, profile: Profile, tracker: StatusTracker, *, runtime_dir: str | Path | None = None,
                    stream: TextIO | None = None, environ: MutableMapping[str, str] | None = None,
                    install_signal: bool = True, state_dir: str | Path | None = None) -> Operations:
        """The real parts: systemd from the environment (its variables then removed, so child
        processes do not notify in our name), the status file of ``profile``'s state directory
        in ``runtime_dir`` (default: /run/pibridge under systemd, see
        `pibridge.bridge.status.default_runtime_dir`), the view on ``stream`` (stdout), a
        reloader for ``profile`` and, from the main thread, the SIGHUP handler. ``state_dir``: the
        state directory in force when ``--state-dir`` overrides the profile's (it names the file)."""
        reload_signal = ReloadSignal()
        if install_signal:
            reload_signal.install()
        return cls(tracker, SystemdNotifier.from_environment(environ, unset=True),
                   StatusWriter.for_bridge(state_dir if state_dir is not None else profile.bridge.state_dir,
                                           runtime_dir),
                   open_view(sys.stdout if stream is None else stream), ProfileReloader(profile),
                   reload_signal)

    # --- logging while the live view owns the terminal ------------------------------------------
    def capture_logging(self, logger: logging.Logger | None = None) -> None:
        """With a live view, log records of ``logger`` (the root logger) are shown under the
        frame instead of being written across it: stream handlers on the view's terminal are
        set aside until `stopping`. Without a terminal nothing changes."""
        if not isinstance(self.view, TerminalView):
            return
        logger = logger or logging.getLogger()
        for handler in list(logger.handlers):
            stream = getattr(handler, "stream", None)
            if isinstance(handler, logging.StreamHandler) and stream is not None and _same_terminal(
                    stream, self.view.stream):
                logger.removeHandler(handler)
                self._captured.append((logger, handler))
        self._view_handler = self.view.log_handler()
        logger.addHandler(self._view_handler)
        self._captured.append((logger, self._view_handler))

    def _release_logging(self) -> None:
        for logger, handler in self._captured:
            if handler is self._view_handler:
                logger.removeHandler(handler)
            else:
                logger.addHandler(handler)
        self._captured.clear()
        self._view_handler = None

    # --- the service's lifecycle -----------------------------------------------------------------
    def started(self, status: str, *, refresh: Callable[[], None] | None = None) -> None:
        """The queue is open and sampling has started: READY=1, first status file and frame."""
        self.notifier.ready(status)
        self._refresh(refresh, force=True)
        self.writer.publish(self.tracker.snapshot, force=True)
        self.view.update(self.tracker.snapshot, force=True)

    def _refresh(self, refresh: Callable[[], None] | None, *, force: bool = False) -> None:
        if refresh is None or not (force or self.writer.due() or self.view.due()):
            return
        try:
            refresh()
        except Exception:    # the status is a window: a failing feed must not stop the bridge
            log.exception("updating the status failed")

    def next_turn_in(self) -> float:
        """Seconds until the next main-loop turn has work: the watchdog's keep-alive, the status
        file's heartbeat (a turn for another reason writes it once `WRITE_INTERVAL_S` passed), a
        live view's frame (a log summary follows the status file); infinite if none."""
        view_due_in = getattr(self.view, "due_in", None)
        return min(self.notifier.watchdog_due_in(), self.writer.heartbeat_in(),
                   view_due_in() if view_due_in is not None else math.inf)

    def tick(self, *, alive: bool, on_reload: Callable[[ReloadResult], None] | None = None,
             refresh: Callable[[], None] | None = None) -> ReloadResult | None:
        """One main-loop turn. ``alive``: the scheduler and the delivery thread are both alive
        (only then is the watchdog pinged, so a hung bridge gets restarted). A SIGHUP received
        since the last turn reloads the profile; a valid new profile is handed to ``on_reload``
        (which applies ``result.change``) before systemd hears READY=1 again. Returns the
        reload's result, if there was one."""
        if alive:
            self.notifier.watchdog_if_due()
        result = None
        if self.reload_signal.take():
            result = self._reload(on_reload)
        elif self._refused_file is not None and self.writer.due():
            self._check_fixed_back()
        self._refresh(refresh, force=result is not None)
        self.writer.publish(self.tracker.snapshot, force=result is not None, changes=self.tracker.changes)
        self.view.show(self.tracker)
        return result

    def _reload(self, on_reload: Callable[[ReloadResult], None] | None) -> ReloadResult:
        """Reload and record the verdict in the snapshot (`pibridge reload` waits for it there)."""
        taken_at = time.time()
        self.notifier.reloading("reloading the profile")
        result = self.reloader.reload()
        self.tracker.restart_pending(result.restart_pending)
        if not result.applied:
            self.tracker.reload_handled(applied=False, problems=result.problems or ("no details",),
                                        at=taken_at)
            self._refused_file = _file_identity(self.reloader.current.path)
            self.notifier.ready("profile refused; the running configuration stays in force")
            return result
        self._refused_file = None
        if on_reload is not None:
            try:
                on_reload(result)
            except Exception as exc:  # applying must not kill the loop; the next reload starts over
                self.reloader.rollback()
                log.error("applying the reloaded profile failed: %s: %s; the next reload tries again",
                          type(exc).__name__, exc)
                log.debug("applying the reloaded profile failed", exc_info=True)
                self.tracker.reload_handled(applied=False, at=taken_at)
                self.notifier.ready("profile not applied; the running configuration stays in force")
                return result
        self.tracker.reload_handled(applied=True, at=taken_at)
        self.notifier.ready("profile reloaded")
        return result

    def _check_fixed_back(self) -> None:
        """After a refused reload: once the file changed, is it back to what runs? Then the
        bridge is no longer degraded by the refusal (a stat per status write; a parse only when
        the file changed)."""
        identity = _file_identity(self.reloader.current.path)
        if identity == self._refused_file:
            return
        self._refused_file = identity
        if self.reloader.file_matches_running():
            log.info("profile %s matches the running configuration again", self.reloader.current.path)
            self.tracker.reload_problems_gone()
            self._refused_file = None

    def stopping(self, status: str = "stopping") -> None:
        """STOPPING=1; the status file removed (no file means "not running"); the terminal and
        logging handed back; SIGHUP back to its previous handler."""
        self.notifier.stopping(status)
        self.writer.remove()
        self.view.close()
        self._release_logging()
        self.reload_signal.uninstall()
        self.notifier.close()


#: the scheduler's sensor states as the snapshot names them
SCHEDULER_STATES = {"building": STARTING, "ok": OK, "failing": FAILING}
MS_PER_S = 1000.0


def feed_status(tracker: StatusTracker, sensors: Mapping[str, Mapping[str, Any]], delivery: DeliveryStatus,
                *, host: str, port: int, clock_synchronised: bool, clock_source: str,
                queue_dead_letters: int | None = None, store_error: str | None = None,
                delivery_error: str | None = None) -> None:
    """The running parts' counters into ``tracker``, in one place: ``sensors`` is
    `Scheduler.stats` (taken, failed, skipped, state, failing_since, last_error, last_values,
    last_timestamp_ms per sensor), ``delivery`` is `Delivery.status` (pushed and dead-lettered
    per sensor; the connection; the queue's depth, oldest sample, dropped and unstamped rows, from
    the queue's ``stats()``), the agent's ``host``/``port``, and the clock's state;
    ``queue_dead_letters`` the queue's own total (it includes rows it could not decode, which
    delivery never saw), ``store_error`` why samples cannot be stored (`SampleQueue.write_error`),
    ``delivery_error`` a failing delivery step (`Delivery.step_error`)."""
    for name, counts in sensors.items():
        last_ms = counts.get("last_timestamp_ms")
        tracker.sensor_totals(
            name, state=SCHEDULER_STATES.get(str(counts.get("state")), STARTING),
            taken=int(counts.get("taken", 0)), failed=int(counts.get("failed", 0)),
            skipped=int(counts.get("skipped", 0)), pushed=delivery.pushed_by_sensor.get(name, 0),
            dead_lettered=delivery.dead_by_sensor.get(name, 0), values=counts.get("last_values", {}),
            failing_since=counts.get("failing_since"), last_error=counts.get("last_error") or None,
            last_sample_at=last_ms / MS_PER_S if last_ms is not None else None,
            last_read_at=counts.get("last_read_at"))
    tracker.agent_totals(connected=delivery.connected, host=host, port=port, since=delivery.connected_since,
                         client_id=delivery.client_id or None, last_ack_at=delivery.last_ack,
                         error=delivery.problem or None)
    oldest = delivery.oldest_timestamp_ms
    tracker.queue_totals(depth=delivery.queue_depth, oldest_sample_at=oldest / MS_PER_S if oldest is not None
                         else None, unstamped=delivery.waiting_for_clock, dropped=delivery.dropped,
                         dead_letters=max(sum(delivery.dead_lettered.values()), queue_dead_letters or 0))
    tracker.store_state(store_error)
    tracker.delivery_state(delivery_error)
    tracker.clock_state(clock_synchronised, clock_source)


def _file_identity(path: Path) -> tuple[int, int, int]:
    """What tells a changed file: (inode, size, mtime in ns); zeros if it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return (0, 0, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _same_terminal(a: TextIO, b: TextIO) -> bool:
    """Whether two streams write to the same terminal (stdout and stderr usually both do)."""
    try:
        if not (a.isatty() and b.isatty()):
            return a is b
        return os.path.samestat(os.fstat(a.fileno()), os.fstat(b.fileno()))
    except (OSError, ValueError, AttributeError):
        return a is b
