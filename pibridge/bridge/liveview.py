"""The live view of `pibridge run` on a terminal: a compact frame redrawn in place (last value of
each sensor with its unit, its state, the queue, the agent connection, recent errors), and plain
log lines when there is no terminal (systemd, a pipe).

Standard library only: a handful of ANSI/VT100 control sequences, which every terminal a Pi user
meets understands (the Linux console, xterm and friends, PuTTY, tmux):

    +-------------+--------------------------------------------+
    | ESC [ n A   | cursor up n lines (back to the frame's top) |
    | CR          | to column 0                                 |
    | ESC [ 2 K   | erase the whole line, then write it anew    |
    | ESC [ J     | erase everything below (a shorter frame)    |
    | ESC [ ?25 l | hide the cursor while the view runs (h: show)|
    | ESC [ … m   | colour: 1 bold, 31 red, 32 green, 0 reset   |
    +-------------+--------------------------------------------+

Lines are cut to the terminal's width minus one (an auto-wrapped line would break the cursor-up
count) and the frame to its height minus one. `render` is pure (snapshot → lines); `TerminalView`
draws at most once a second and only what changed is cheap enough for a Pi Zero: one small write.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from pibridge.bridge.status import (
    FAILING,
    OK,
    BridgeStatus,
    SensorStatus,
    StatusSummary,
    StatusTracker,
    format_duration,
)
from pibridge.terminal import REPLACEMENT, printable

log = logging.getLogger(__name__)

ESC = "\x1b"
CSI = ESC + "["
ERASE_LINE = CSI + "2K"
ERASE_BELOW = CSI + "J"
HIDE_CURSOR = CSI + "?25l"
SHOW_CURSOR = CSI + "?25h"
BOLD, RED, GREEN, DIM, RESET = CSI + "1m", CSI + "31m", CSI + "32m", CSI + "2m", CSI + "0m"

REDRAW_INTERVAL_S = 1.0        #: at most one frame per second
LOG_LINES_KEPT = 5             #: log lines shown under the frame
ERRORS_SHOWN = 3               #: snapshot's recent errors shown
ERROR_LINES_MAX = 3            #: a failing sensor's error wraps onto at most this many lines
ELLIPSIS = "…"
#: a deadband holds unchanged values back: the last read is shown beside the last value's age
#: once it is this much later than the last sample
READ_AFTER_SAMPLE_S = 1.0
NAME_WIDTH = 22
STATE_WIDTH = 14
FALLBACK_SIZE = os.terminal_size((80, 24))
WIDE = ("W", "F")              #: East Asian widths that take two columns


def _char_width(ch: str) -> int:
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in WIDE else 1


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal: East Asian wide characters take two, combining
    marks none (a line one column too long wraps and breaks the redraw in place)."""
    return sum(_char_width(ch) for ch in text)


def _cut(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns, "…" marking the cut."""
    if display_width(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = _char_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def shorten_middle(text: str, width: int) -> str:
    """``text`` in at most ``width`` columns, cut from the middle: the start says what failed,
    the end what to do about it, and both stay."""
    if display_width(text) <= width:
        return text
    if width <= 1:
        return ELLIPSIS[:width]
    head_width = (width - 1) // 2
    tail_width = width - 1 - head_width
    head, used = [], 0
    for ch in text:
        if used + _char_width(ch) > head_width:
            break
        head.append(ch)
        used += _char_width(ch)
    tail, used = [], 0
    for ch in reversed(text):
        if used + _char_width(ch) > tail_width:
            break
        tail.append(ch)
        used += _char_width(ch)
    return "".join(head) + ELLIPSIS + "".join(reversed(tail))


ADVICE_SEPARATOR = ": "        #: errors read "what: why: what to do"; the last part is kept whole
HEAD_MIN = 12                  #: columns the start of an error keeps at least (which sensor, what)


def shorten_error(text: str, width: int) -> str:
    """An error in at most ``width`` columns: what follows its last ": " (what to do: "add
    dtoverlay=w1-gpio … and reboot") is kept whole where it fits, and the start is shortened
    from its middle; else the whole text is (`shorten_middle`)."""
    if display_width(text) <= width:
        return text
    head, separator, advice = text.rpartition(ADVICE_SEPARATOR)
    room = width - display_width(advice) - len(separator)
    if separator and room >= HEAD_MIN:
        return shorten_middle(head, room) + separator + advice
    return shorten_middle(text, width)


def wrap(text: str, width: int, max_lines: int) -> list[str]:
    """``text`` wrapped at spaces into lines of at most ``width`` columns, at most ``max_lines``
    of them: a longer text is first shortened (`shorten_error`) so that its end, which usually
    says what to do, is never cut off."""
    width = max(1, width)
    lines = _wrap_words(text, width)
    if len(lines) <= max_lines:
        return lines
    budget = width * max_lines
    while budget > 1:
        lines = _wrap_words(shorten_error(text, budget), width)
        if len(lines) <= max_lines:
            return lines
        budget -= max(1, width // 4)      # word breaks waste room: give some back
    return [shorten_middle(text, width)]


def _wrap_words(text: str, width: int) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if display_width(candidate) <= width:
            line = candidate
            continue
        if line:
            lines.append(line)
        while display_width(word) > width:       # a word longer than a line: split it
            cut = _cut(word, width + 1)[:-1] or word[:1]
            lines.append(cut)
            word = word[len(cut):]
        line = word
    lines.append(line)
    return lines


def _freshness(sensor: SensorStatus, now: float) -> str:
    """``(2 min ago)``; with a deadband holding values back: ``(read 5 s ago, changed 2 min ago)``."""
    if sensor.last_sample_at is None:
        return ""
    changed = format_duration(now - sensor.last_sample_at)
    read = sensor.last_read_at
    if read is not None and read - sensor.last_sample_at >= READ_AFTER_SAMPLE_S:
        return f"(read {format_duration(now - read)} ago, changed {changed} ago)"
    return f"({changed} ago)"


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - display_width(text))


def _clock(at: float) -> str:
    try:
        return time.strftime("%H:%M:%S", time.localtime(at))
    except (OverflowError, OSError, ValueError):     # a time no calendar holds
        return "--:--:--"


def render(status: BridgeStatus, width: int = 80, height: int | None = None, *,
           log_lines: Sequence[str] = (), color: bool = False, now: float | None = None) -> list[str]:
    """The frame for one snapshot: at most ``height`` lines (None: no limit), each at most
    ``width`` characters of text (colour sequences not counted). Ages are relative to ``now``
    (wall-clock seconds; default the snapshot's ``written_at``, or the current time if unwritten)."""
    if now is None:
        now = status.written_at or time.time()
    agent = status.agent
    away = format_duration(now - (agent.since or status.started_at))
    connection = f"connected {away}" if agent.connected else f"AWAY {away}"
    queue = f"queue {status.queue.depth}"
    if status.queue.dropped:
        queue += f" (dropped {status.queue.dropped})"
    clock = "clock ok" if status.clock.synchronised else "clock NOT SET"
    header = f"pibridge  {_clock(now)}  agent {agent.host}:{agent.port} {connection}  {queue}  {clock}"
    lines: list[tuple[str, str]] = [(header, BOLD)]
    reload = status.reload
    if reload.refused:
        lines.append((f"profile REFUSED {_clock(reload.at or now)} ({reload.problem_count} problem"
                      f"{'' if reload.problem_count == 1 else 's'}): running the previous one; "
                      "`pibridge check` lists them", RED))
    elif reload.count and reload.at is not None:
        lines.append((f"profile reloaded {_clock(reload.at)}"
                      + ("" if reload.applied else " but not applied (see the log)"), DIM))
    indent = " " * (NAME_WIDTH + 1 + STATE_WIDTH + 1)
    shown_errors: set[tuple[str, str]] = set()     # (sensor, message) already on a sensor's line
    for sensor in status.sensors:
        name = _pad(_cut(printable(sensor.name, REPLACEMENT), NAME_WIDTH), NAME_WIDTH)
        if sensor.state == FAILING:
            since = format_duration(now - sensor.failing_since) if sensor.failing_since is not None else ""
            state = f"FAILING {since}".strip()
            error = printable(sensor.last_error or "", REPLACEMENT)
            shown_errors.add((sensor.name, sensor.last_error or ""))
            parts = wrap(error, width - len(indent), ERROR_LINES_MAX) if error else [""]
            lines.append((f"{name} {state:<{STATE_WIDTH}} {parts[0]}", RED))
            lines += [(indent + part, RED) for part in parts[1:]]
            continue
        style = GREEN if sensor.state == OK else ""
        detail = "  ".join(v.shown for v in sensor.values)
        fresh = _freshness(sensor, now)
        detail = f"{detail}  {fresh}" if detail and fresh else detail or fresh
        lines.append((f"{name} {sensor.state:<{STATE_WIDTH}} {detail}", style))
    # an error already on its sensor's line is not repeated below it, nor its log line
    errors = [e for e in status.recent_errors if (e.sensor, e.message) not in shown_errors][-ERRORS_SHOWN:]
    if errors:
        lines.append(("recent errors:", DIM))
        for e in errors:
            prefix = f"  {_clock(e.at)} "
            text = printable((f"{e.sensor}: " if e.sensor else "") + e.message, REPLACEMENT)
            lines.append((prefix + shorten_error(text, width - display_width(prefix)), ""))
    shown_messages = [message for _, message in shown_errors if message]
    log_lines = [line for line in log_lines if not any(m in line for m in shown_messages)]
    if log_lines:
        lines.append(("log:", DIM))
        lines += [("  " + shorten_error(printable(line, REPLACEMENT), width - 2), "") for line in log_lines]
    if height is not None and len(lines) > height:
        lines = [*lines[:max(0, height - 1)], (f"… {len(lines) - height + 1} more lines", DIM)]
    out = []
    for text, style in lines:
        text = _cut(printable(text, REPLACEMENT).rstrip(), width)
        out.append(f"{style}{text}{RESET}" if color and style else text)
    return out


class _CapturingHandler(logging.Handler):
    """Log records as lines kept for the frame (the terminal belongs to the view while it runs)."""

    def __init__(self, keep: deque[str], level: int) -> None:
        super().__init__(level)
        self._keep = keep
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            for line in self.format(record).splitlines()[:1]:
                self._keep.append(line)
        except Exception:           # a broken record must not break the view (logging's own rule)
            self.handleError(record)


class TerminalView:
    """Redraws the frame in place on ``stream`` (a terminal). Call `update` every main-loop turn
    (it draws at most every ``min_interval_s``), `close` on exit (the last frame stays on screen).
    While it runs, route logging through `log_handler` instead of a stream handler on the same
    terminal, or log lines would tear the frame."""

    def __init__(self, stream: TextIO, *, min_interval_s: float = REDRAW_INTERVAL_S,
                 color: bool | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 clock: Callable[[], float] = time.time) -> None:
        self.stream = stream
        self._clock = clock
        self.min_interval_s = min_interval_s
        self.color = (os.environ.get("NO_COLOR", "") == "") if color is None else color
        self._monotonic = monotonic
        self._drawn = 0
        self._last_draw: float | None = None
        self._last_frame: list[str] = []
        self._log_lines: deque[str] = deque(maxlen=LOG_LINES_KEPT)

    def log_handler(self, level: int = logging.WARNING) -> logging.Handler:
        """A handler that shows log records (``level`` and above) under the frame."""
        return _CapturingHandler(self._log_lines, level)

    @property
    def frame(self) -> list[str]:
        """The lines last drawn (with colour sequences if ``color``)."""
        return list(self._last_frame)

    def size(self) -> os.terminal_size:
        """The terminal's columns and rows; 80 × 24 when it does not say (a fresh pty reports 0 × 0)."""
        try:
            size = os.get_terminal_size(self.stream.fileno())
            if size.columns > 0 and size.lines > 0:
                return size
            return FALLBACK_SIZE
        except (OSError, ValueError, AttributeError):
            import shutil  # only here: shutil pulls in the compression modules

            return shutil.get_terminal_size(FALLBACK_SIZE)

    def due(self) -> bool:
        """A frame is due (the service refreshes the snapshot only then)."""
        return self._last_draw is None or self._monotonic() - self._last_draw >= self.min_interval_s

    def due_in(self) -> float:
        """Seconds until the next frame is due (0 if it is)."""
        if self._last_draw is None:
            return 0.0
        return max(0.0, self.min_interval_s - (self._monotonic() - self._last_draw))

    def update(self, snapshot: BridgeStatus | Callable[[], BridgeStatus], *, force: bool = False) -> bool:
        """Redraw if due; True if a frame was written."""
        now = self._monotonic()
        if not force and self._last_draw is not None and now - self._last_draw < self.min_interval_s:
            return False
        status = snapshot() if callable(snapshot) else snapshot
        columns, rows = self.size()
        frame = render(status, max(1, columns - 1), max(1, rows - 1), log_lines=list(self._log_lines),
                       color=self.color, now=self._clock())
        self._last_draw = now
        if frame == self._last_frame:
            return False
        parts = [HIDE_CURSOR]
        if self._drawn:
            parts.append(f"{CSI}{self._drawn}A\r")
        parts += [f"{ERASE_LINE}{line}\n" for line in frame]
        parts.append(ERASE_BELOW)
        self._write("".join(parts))
        self._drawn, self._last_frame = len(frame), frame
        return True

    def show(self, tracker: StatusTracker) -> bool:
        """`update` from ``tracker``'s snapshot (built only when a frame is due)."""
        return self.update(tracker.snapshot)

    def close(self) -> None:
        """Show the cursor again; the last frame stays where it is."""
        self._write(SHOW_CURSOR)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):     # the terminal went away (ssh dropped): keep running
            pass


class LogLinesView:
    """Without a terminal: one plain log line whenever the summary changes (sensors ok/failing,
    the agent connection, the queue emptied or not, the clock) — never one per value, so the
    journal holds changes of state, not noise."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or log
        self._last: str | None = None

    def log_handler(self, level: int = logging.WARNING) -> None:
        """No capture: log records go wherever logging is configured to send them."""
        return None

    def due(self) -> bool:
        """Never on its own: the summary follows the snapshot the status file is written from
        (a change of state shows within `pibridge.bridge.status.HEARTBEAT_S`)."""
        return False

    def update(self, snapshot: BridgeStatus | Callable[[], BridgeStatus], *, force: bool = False) -> bool:
        status = snapshot() if callable(snapshot) else snapshot
        return self._log_if_changed(StatusSummary.of(status), force=force)

    def show(self, tracker: StatusTracker) -> bool:
        """The line from ``tracker``'s few summary facts (`StatusTracker.summary`: no snapshot
        built), logged if it changed."""
        return self._log_if_changed(tracker.summary())

    def _log_if_changed(self, summary: StatusSummary, *, force: bool = False) -> bool:
        line = summary_text(summary)
        if line == self._last and not force:
            return False
        self._last = line
        self._log.info("%s", line)
        return True

    def close(self) -> None:
        pass


def summary_line(status: BridgeStatus) -> str:
    """``status: 6/7 sensors ok (failing: Door); agent connected; queue empty; clock synchronised``"""
    return summary_text(StatusSummary.of(status))


def summary_text(summary: StatusSummary) -> str:
    """`summary_line` from the summary's facts alone."""
    sensors = f"{summary.ok}/{summary.total} sensors ok"
    if summary.failing:
        sensors += f" (failing: {', '.join(summary.failing)})"
    agent = "agent connected" if summary.agent_connected else "agent not connected"
    queue = "queue empty" if summary.queue_empty else "samples queued"
    clock = "clock synchronised" if summary.clock_synchronised else "clock not synchronised"
    return f"status: {sensors}; {agent}; {queue}; {clock}"


def open_view(stream: TextIO | None = None, **kwargs: Any) -> TerminalView | LogLinesView:
    """The view for ``stream`` (stdout by default): `TerminalView` on a terminal (not
    ``TERM=dumb``), else `LogLinesView`."""
    stream = sys.stdout if stream is None else stream
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):
        interactive = False
    if interactive and os.environ.get("TERM", "") != "dumb":
        return TerminalView(stream, **kwargs)
    return LogLinesView()
