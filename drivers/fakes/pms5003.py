"""A fake PMS5003 on a pseudo-terminal (hardware.md §16.6) and its simulator.

Power-on state: active mode, fan running (and warm: the sensor has been powered for a while).
Active mode streams a 32-byte frame every ``cadence_s``; passive mode sends one on ``E2``.
``E1``/``E4 00`` are acknowledged with the 8-byte ack; ``E4 01`` (wake) is not. Asleep (``E4 00``,
or the SET pin low when ``set_level`` is given) it sends nothing; for ``WARMUP_S`` after a wake
its values are zero (the fan is not stable yet). Faults: ``corrupt_next`` (checksum),
``truncate_next`` (first N bytes), ``garbage_before_next``, ``wrong_length_next`` (a length field
that is neither 28 nor 4), and those of `FakeSerialChip` (``silent``: a dead fan, ``split_next``,
`inject`, `unplug`). ``commands`` lists every well-formed command received.

The frame's checksum is computed here on its own (not imported), so tests compare two
implementations.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import pms5003 as chip
from .serial import FakeSerialChip

if TYPE_CHECKING:
    from ..simulation import SimulatedWorld

PMS_COMMAND_LEN = 7
PMS_START = (0x42, 0x4D)
PMS_DEFAULT_CADENCE_S = 2.3
PMS_WRONG_LENGTH = 0x0030
PMS_RESERVED = 0x9700        #: version 0x97, error code 0 (hardware.md §16.5)
PMS_LITRE_FRACTION = 0.1     #: counts are per 0.1 L of air


def pms_sum(data: bytes) -> int:
    total = 0
    for byte in data:
        total += byte
    return total & 0xFFFF


def cf1_from_atmospheric(atmospheric: int) -> int:
    """CF=1 µg/m³ the fake reports beside an atmospheric value: equal at low concentrations,
    higher at high ones (the community observation of §16.4; the manual gives no formula)."""
    return atmospheric if atmospheric <= 30 else round(30 + (atmospheric - 30) * 1.5)


def counts_from_pm(pm1: float, pm25: float, pm10: float) -> tuple[int, ...]:
    """Plausible particle counts per 0.1 L for the mass concentrations (monotone, decreasing
    with size)."""
    fine = max(0.0, pm1)
    return (round(fine * 240), round(fine * 70), round(fine * 15), round(max(0.0, pm25 - pm1) * 3),
            round(max(0.0, pm10 - pm25) * 0.5), round(max(0.0, pm10 - pm25) * 0.15))


class FakePMS5003(FakeSerialChip):
    """PMS5003 on the wire. ``source()`` gives atmospheric (pm1, pm2.5, pm10) µg/m³ (or the
    attribute ``pm``); ``set_level()`` reads the SET pin (True: working)."""

    name = "pms5003"

    def __init__(self, *, pm: tuple[float, float, float] = (8.0, 12.0, 15.0),
                 source: Callable[[], tuple[float, float, float]] | None = None,
                 set_level: Callable[[], bool] | None = None, cadence_s: float = PMS_DEFAULT_CADENCE_S,
                 clock: Callable[[], float] = time.monotonic, **kwargs: Any) -> None:
        self.pm = pm
        self.source = source
        self.set_level = set_level
        self.cadence_s = cadence_s
        self.active = True
        self.sleeping = False
        self.commands: list[tuple[int, int]] = []
        self.corrupt_next = False
        self.truncate_next: int | None = None
        self.garbage_before_next = b""
        self.wrong_length_next = False
        self._command = bytearray()
        self._was_set_high = True
        self._next_frame: float | None = None
        self.woke_at = clock() - chip.WARMUP_S   # powered for a while before we look
        super().__init__(clock=clock, **kwargs)

    # -- power -----------------------------------------------------------------------------------
    @property
    def awake(self) -> bool:
        self._follow_set_pin()
        return not self.sleeping

    def poll(self) -> None:
        self._follow_set_pin()

    def _follow_set_pin(self) -> None:
        if self.set_level is None:
            return
        high = bool(self.set_level())
        if high and not self._was_set_high:
            self.sleeping = False
            self.woke_at = self.clock()
        elif not high:
            self.sleeping = True
        self._was_set_high = high

    def warm(self) -> bool:
        return self.clock() - self.woke_at >= chip.WARMUP_S

    # -- commands --------------------------------------------------------------------------------
    def receive(self, byte: int) -> None:
        """Collect 7-byte commands, resynchronising on ``42 4D``."""
        if len(self._command) < 2 and byte != PMS_START[len(self._command)]:
            self._command = bytearray([byte]) if byte == PMS_START[0] else bytearray()
            return
        self._command.append(byte)
        if len(self._command) < PMS_COMMAND_LEN:
            return
        command, self._command = bytes(self._command), bytearray()
        if int.from_bytes(command[5:7], "big") != pms_sum(command[:5]):
            return  # a bad checksum is ignored
        cmd, data = command[2], int.from_bytes(command[3:5], "big")
        self.handle(cmd, data)
        self.commands.append((cmd, data))  # after its effect: a test that sees it sees the state

    def handle(self, cmd: int, data: int) -> None:
        if cmd == chip.CMD_SLEEP:
            if data == chip.WAKE:
                if self.sleeping:
                    self.sleeping = False
                    self.woke_at = self.clock()
                    self._next_frame = self.clock() + self.cadence_s
                return  # no ack: the fan restarts
            self.ack(cmd, data)
            self.sleeping = True
            return
        if not self.awake:
            return
        if cmd == chip.CMD_MODE:
            self.active = data == chip.MODE_ACTIVE
            self.ack(cmd, data)
            if self.active:
                self._next_frame = self.clock() + self.cadence_s
        elif cmd == chip.CMD_READ and not self.active:
            self.send_frame()

    def ack(self, cmd: int, data: int) -> None:
        """``42 4D 00 04 CMD DL CKH CKL``."""
        body = bytes([*PMS_START, 0x00, 0x04, cmd, data & 0xFF])
        self.send(body + pms_sum(body).to_bytes(2, "big"))

    # -- frames ----------------------------------------------------------------------------------
    def values(self) -> tuple[int, int, int]:
        if not self.warm():
            return (0, 0, 0)
        pm = self.source() if self.source is not None else self.pm
        pm1, pm25, pm10 = (max(0, min(0xFFFF, round(v))) for v in pm)
        return pm1, pm25, pm10

    def frame(self) -> bytes:
        """The 32-byte data frame for the current values."""
        atmospheric = self.values()
        cf1 = tuple(cf1_from_atmospheric(v) for v in atmospheric)
        counts = counts_from_pm(*atmospheric) if any(atmospheric) else (0,) * 6
        length = PMS_WRONG_LENGTH if self.wrong_length_next else chip.DATA_LENGTH
        self.wrong_length_next = False
        words = (length, *cf1, *atmospheric, *counts, PMS_RESERVED)
        body = bytes(PMS_START) + b"".join(min(0xFFFF, w).to_bytes(2, "big") for w in words)
        checksum = pms_sum(body)
        if self.corrupt_next:
            self.corrupt_next = False
            checksum ^= 0x0101
        return body + checksum.to_bytes(2, "big")

    def send_frame(self) -> None:
        data = self.frame()
        if self.garbage_before_next:
            self.inject(self.garbage_before_next)
            self.garbage_before_next = b""
        if self.truncate_next is not None:
            data, self.truncate_next = data[:self.truncate_next], None
        self.send(data)

    def tick(self, now: float) -> float | None:
        """Active mode: one frame per ``cadence_s`` while awake."""
        if not self.active or not self.awake:
            self._next_frame = None
            return now + self.cadence_s
        if self._next_frame is None:
            self._next_frame = now + self.cadence_s
        if now >= self._next_frame:
            self.send_frame()
            self._next_frame = now + self.cadence_s
        return self._next_frame


def simulate(world: SimulatedWorld, cls: type[chip.PMS5003], options: dict[str, Any]) -> chip.PMS5003:
    """A PMS5003 driver on its own fake chip behind a pseudo-terminal, breathing the world's
    particulates (its SET pin on the world's mock pins when ``set_pin`` is given); the fake's
    thread stops when the driver closes (and with the world, at the latest)."""
    config = cls.check_options(options)
    env = world.environment
    factory = world.pin_factory() if config["set_pin"] is not None else None
    set_level = None
    if factory is not None:
        pin = factory.pin(config["set_pin"])
        set_level = lambda: bool(pin.state)  # noqa: E731
    fake = FakePMS5003(source=env.particulates_ugm3, set_level=set_level, clock=world.clock.monotonic)
    world.shared(("serial-chip", fake.device), lambda: fake)  # found by its pty's name; closed with the world
    extra: dict[str, Any] = {"pin_factory": factory} if factory is not None else {}
    try:
        return cls(fake.device, release=fake.close, clock=world.clock.monotonic, **extra, **options)
    except BaseException:
        fake.close()
        raise
