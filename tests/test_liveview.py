"""The live view: the pure frame, and the redraw-in-place driver on a real pseudo-terminal, read
back through a small model of a VT100 screen (only the sequences the view may send are accepted:
anything else fails the test)."""

from __future__ import annotations

import fcntl
import logging
import os
import re
import select
import struct
import termios
from collections.abc import Iterator

import pytest

from pibridge.bridge.liveview import (
    LogLinesView,
    TerminalView,
    display_width,
    open_view,
    render,
    summary_line,
)
from pibridge.bridge.status import BridgeStatus, StatusTracker, TrackedSensor

READ_TIMEOUT_S = 5.0
FRAME_END = "\x1b[J"
T0 = 1_700_000_000.0


def _tracker(clock: list[float]) -> StatusTracker:
    tracker = StatusTracker("greenhouse.toml", "/var/lib/pibridge", clock=lambda: clock[0])
    tracker.set_sensors([
        TrackedSensor("Air (BME280)", "bme280", 60.0, (("temperature", "Temperature", "°C"),
                                                       ("humidity", "Humidity", "%"))),
        TrackedSensor("Canopy (DHT22)", "dht22", 30.0, (("temperature", "Temperature", "°C"),)),
        TrackedSensor("Door", "digital_input", 60.0, (("open", "Open", ""),)),
    ])
    tracker.agent_state(connected=True, host="localhost", port=18884)
    tracker.clock_state(True, "timesyncd")
    tracker.sample_taken("Air (BME280)", {"temperature": 21.53, "humidity": 55.2}, at=clock[0])
    tracker.sample_taken("Door", {"open": True}, at=clock[0])
    return tracker


def test_render_shows_values_units_states_queue_agent_errors() -> None:
    clock = [T0]
    tracker = _tracker(clock)
    clock[0] += 90
    tracker.read_failed("Canopy (DHT22)", "checksum mismatch")
    tracker.queue_state(12, T0, dropped=0)
    clock[0] += 30
    lines = render(tracker.snapshot(), 100, now=clock[0])
    assert "agent localhost:18884 connected 2 min" in lines[0] and "queue 12" in lines[0]
    assert "clock ok" in lines[0]
    assert re.match(r"Air \(BME280\) +ok +21\.53 °C  55\.2 %  \(2 min ago\)$", lines[1])
    assert re.match(r"Canopy \(DHT22\) +FAILING 30 s +checksum mismatch$", lines[2])
    assert re.match(r"Door +ok +on  \(2 min ago\)$", lines[3])
    assert len(lines) == 4       # the failing sensor's error is on its line, not again below it


def test_render_fits_width_and_height() -> None:
    clock = [T0]
    snapshot = _tracker(clock).snapshot()
    lines = render(snapshot, 30, 3, now=T0, log_lines=["a", "b", "c"])
    assert len(lines) == 3 and all(len(line) <= 30 for line in lines)
    assert lines[-1].startswith("… ") and lines[-1].endswith("more lines")
    colored = render(snapshot, 30, now=T0, color=True)
    assert colored[0].startswith("\x1b[1m") and colored[0].endswith("\x1b[0m")
    assert len(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", colored[0])) <= 30


class Screen:
    """A VT100 screen of ``rows`` × ``columns``: enough to replay what the view sends."""

    CSI_RE = re.compile(r"\x1b\[(\??)([0-9;]*)([A-Za-z])")

    def __init__(self, rows: int, columns: int) -> None:
        self.rows, self.columns = rows, columns
        self.lines = [""] * rows
        self.row = self.col = 0
        self.scrolled = 0

    def feed(self, data: str) -> None:
        i = 0
        while i < len(data):
            ch = data[i]
            if ch == "\x1b":
                match = self.CSI_RE.match(data, i)
                assert match, f"unexpected escape {data[i:i + 8]!r}"
                self._csi(*match.groups())
                i = match.end()
                continue
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.row += 1
                if self.row == self.rows:
                    self.lines = [*self.lines[1:], ""]
                    self.row -= 1
                    self.scrolled += 1
            else:
                assert ch.isprintable(), f"unexpected control {ch!r}"
                assert self.col < self.columns, "a line ran past the right margin"
                line = self.lines[self.row].ljust(self.col)
                self.lines[self.row] = line[:self.col] + ch + line[self.col + 1:]
                self.col += 1
            i += 1

    def _csi(self, private: str, params: str, command: str) -> None:
        if private:
            assert params == "25" and command in "lh", f"unexpected private mode {params}{command}"
        elif command == "A":
            self.row = max(0, self.row - int(params or 1))
        elif command == "K":
            assert params == "2"
            self.lines[self.row] = ""
        elif command == "J":
            assert params in ("", "0")
            self.lines[self.row] = self.lines[self.row][:self.col]
            for r in range(self.row + 1, self.rows):
                self.lines[r] = ""
        elif command == "m":
            pass
        else:
            raise AssertionError(f"unexpected sequence CSI {params}{command}")

    def text(self) -> list[str]:
        return [line.rstrip() for line in self.lines]


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, int]]:
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 12, 60, 0, 0))   # 12 rows × 60 columns
    yield master, slave
    os.close(master)


def _read_frame(master: int) -> str:
    data = b""
    while not data.decode(errors="replace").endswith(FRAME_END):
        ready, _, _ = select.select([master], [], [], READ_TIMEOUT_S)
        assert ready, f"no frame from the terminal; got {data!r}"
        data += os.read(master, 65536)
    return data.decode()


def test_redraws_in_place_on_a_pseudo_terminal(pty_pair: tuple[int, int]) -> None:
    master, slave = pty_pair
    stream = os.fdopen(slave, "w", encoding="utf-8")
    now, wall = [0.0], [T0]
    view = open_view(stream, monotonic=lambda: now[0], clock=lambda: wall[0], color=True)
    assert isinstance(view, TerminalView)
    assert tuple(view.size()) == (60, 12)
    screen = Screen(12, 60)
    screen.feed("$ pibridge run --profile greenhouse.toml\r\n")    # what was on screen before

    tracker = _tracker(wall)
    assert view.update(tracker.snapshot)
    screen.feed(_read_frame(master))
    first = screen.text()
    assert first[0] == "$ pibridge run --profile greenhouse.toml"
    assert first[1].startswith("pibridge ") and "connected" in first[1]
    assert first[2].startswith("Air (BME280)") and "21.53 °C  55.2 %" in first[2]
    assert first[3].startswith("Canopy (DHT22)") and "starting" in first[3]

    now[0] += 0.5
    assert not view.update(tracker.snapshot)                      # at most one frame a second
    now[0] += 0.5
    wall[0] += 1
    tracker.read_failed("Canopy (DHT22)", "checksum mismatch")
    tracker.agent_state(connected=False, host="localhost", port=18884, error="connection refused")
    logging.getLogger("pibridge.test").addHandler(view.log_handler())
    logging.getLogger("pibridge.test").warning("agent unreachable: connection refused")
    assert view.update(tracker.snapshot)
    screen.feed(_read_frame(master))
    second = screen.text()
    assert second[0] == "$ pibridge run --profile greenhouse.toml"   # redrawn in place, not below
    assert "agent localhost:18884 AWAY 0 s" in second[1]
    assert "FAILING" in second[3] and "checksum mismatch" in second[3]
    assert any("WARNING agent unreachable: connection refused" in line for line in second)
    assert sum("checksum mismatch" in line for line in second) == 1     # shown once
    assert screen.scrolled == 0
    assert all(len(line) < 60 for line in second)

    # a shorter frame erases what the longer one left below it
    tracker.set_sensors([TrackedSensor("Door", "digital_input", 60.0, (("open", "Open", ""),))])
    now[0] += 1
    assert view.update(tracker.snapshot)
    screen.feed(_read_frame(master))
    third = screen.text()
    assert third[2].startswith("Door") and not any(line.startswith("Air") for line in third)
    view.close()
    stream.close()


def test_without_a_terminal_plain_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as pipe:
        view = open_view(pipe)
    os.close(read_end)
    assert isinstance(view, LogLinesView)
    clock = [T0]
    tracker = _tracker(clock)
    caplog.set_level(logging.INFO, logger="pibridge.bridge.liveview")
    assert view.update(tracker.snapshot)
    assert not view.update(tracker.snapshot)                       # nothing changed: no line
    tracker.sample_taken("Air (BME280)", {"temperature": 30.0, "humidity": 40.0})
    assert not view.update(tracker.snapshot)                       # new values are not news
    tracker.read_failed("Door", "GPIO17 busy")
    assert view.update(tracker.snapshot)
    assert [r.getMessage() for r in caplog.records] == [
        "status: 2/3 sensors ok; agent connected; queue empty; clock synchronised",
        "status: 1/3 sensors ok (failing: Door); agent connected; queue empty; clock synchronised"]


def test_log_lines_from_the_tracker_alone(caplog: pytest.LogCaptureFixture) -> None:
    """`LogLinesView.show` reads the tracker's few summary facts, never a whole snapshot, and
    logs the same line `update` would."""
    clock = [T0]
    tracker = _tracker(clock)
    view = LogLinesView()
    caplog.set_level(logging.INFO, logger="pibridge.bridge.liveview")
    built = []
    snapshot = tracker.snapshot
    tracker.snapshot = lambda: built.append(1) or snapshot()  # type: ignore[method-assign]
    assert view.show(tracker)
    assert not view.show(tracker)
    tracker.read_failed("Door", "GPIO17 busy")
    assert view.show(tracker)
    assert built == []
    assert [r.getMessage() for r in caplog.records] == [
        "status: 2/3 sensors ok; agent connected; queue empty; clock synchronised",
        "status: 1/3 sensors ok (failing: Door); agent connected; queue empty; clock synchronised"]
    assert caplog.records[-1].getMessage() == summary_line(snapshot())


def test_summary_line_of_an_empty_bridge() -> None:
    assert summary_line(BridgeStatus("p", "s", T0)) == (
        "status: 0/0 sensors ok; agent not connected; queue empty; clock not synchronised")


def test_hostile_names_and_messages_cannot_drive_the_terminal() -> None:
    tracker = StatusTracker("p.toml", "/s", clock=lambda: T0)
    tracker.set_sensors([TrackedSensor("温室の空気センサー一号機です", "bme280", 60.0),     # wide characters
                         TrackedSensor("evil\x1b[2J\x1b]0;pwned\x07", "dht22", 60.0)])
    tracker.read_failed("evil\x1b[2J\x1b]0;pwned\x07", "bad\rline\x1b[1A")
    lines = render(tracker.snapshot(), 40, now=T0)
    assert all("\x1b" not in line and "\r" not in line and "\x07" not in line for line in lines)
    assert all(display_width(line) <= 40 for line in lines)
    assert lines[1].startswith("温室の空気センサー一…  ")       # 22 columns: 10 wide characters and "…"
    assert display_width(lines[1].split(" starting")[0].rstrip()) <= 22
    assert "evil\ufffd[2J\ufffd]0;pwned\ufffd" in lines[2]


def test_display_width() -> None:
    assert display_width("abc") == 3 and display_width("温室") == 4 and display_width("e\u0301") == 1
