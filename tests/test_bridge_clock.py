"""The clock-not-set rule (`pibridge.bridge.clock`): floor, timesyncd flag, kernel state, latch."""

from __future__ import annotations

from pathlib import Path

from pibridge.bridge.clock import (
    RELEASE_FLOOR_S,
    AnySource,
    KernelSync,
    SystemClock,
    TimesyncFlag,
    TrustedClock,
    read_boot_id,
    resolve_timestamp_ms,
)


class Flag:
    def __init__(self, value: bool = False) -> None:
        self.value = value
        self.asked = 0

    def synchronized(self) -> bool:
        self.asked += 1
        return self.value


def make_clock(sync: Flag, wall: list[float], mono: list[float]) -> SystemClock:
    return SystemClock(sync, wall=lambda: wall[0], monotonic=lambda: mono[0], boot_id="boot-a")


def test_not_set_until_the_sync_source_says_so_then_latched() -> None:
    sync, wall, mono = Flag(False), [RELEASE_FLOOR_S + 100.0], [5.0]
    clock = make_clock(sync, wall, mono)
    assert not clock.poll() and not clock.is_set()
    sync.value = True
    assert clock.poll() and clock.is_set()
    sync.value = False  # NTP lost later: the clock that was set stays set
    assert clock.poll() and clock.is_set()


def test_a_clock_before_the_release_date_is_never_set_even_if_synchronised() -> None:
    sync, wall, mono = Flag(True), [RELEASE_FLOOR_S - 1.0], [5.0]
    clock = make_clock(sync, wall, mono)
    assert not clock.poll()
    wall[0] = RELEASE_FLOOR_S + 1.0
    assert clock.poll()


def test_trusted_clock_needs_only_the_floor() -> None:
    wall = [RELEASE_FLOOR_S - 10.0]
    clock = SystemClock(TrustedClock(), wall=lambda: wall[0], monotonic=lambda: 1.0, boot_id="b")
    assert not clock.poll()
    wall[0] = RELEASE_FLOOR_S + 10.0
    assert clock.poll()


def test_offset_resolves_monotonic_time_to_wall_time() -> None:
    wall, mono = [1_800_000_000.250], [1234.125]
    clock = make_clock(Flag(True), wall, mono)
    offset = clock.wall_minus_monotonic_ms()
    assert offset == 1_800_000_000_250 - 1_234_125
    # a sample taken 10.5 s before now (monotonic) gets the wall time of that moment
    assert resolve_timestamp_ms(mono[0] - 10.5, offset) == 1_800_000_000_250 - 10_500


def test_timesyncd_flag_file(tmp_path: Path) -> None:
    flag = tmp_path / "synchronized"
    source = TimesyncFlag(flag)
    assert not source.synchronized()
    flag.touch()
    assert source.synchronized()


def test_any_source_and_kernel_query_answer_without_raising(tmp_path: Path) -> None:
    kernel = KernelSync()
    assert isinstance(kernel.synchronized(), bool)  # the real adjtimex: whatever this host says
    flag = tmp_path / "synchronized"
    both = AnySource((TimesyncFlag(flag), Flag(False)))
    assert not both.synchronized()
    flag.touch()
    assert both.synchronized()


def test_boot_id_from_the_kernel_or_a_marker(tmp_path: Path) -> None:
    assert read_boot_id(tmp_path / "missing") == "unknown-boot"
    (tmp_path / "boot_id").write_text("0d1f-2e3c\n")
    assert read_boot_id(tmp_path / "boot_id") == "0d1f-2e3c"
    assert read_boot_id()  # this machine's
