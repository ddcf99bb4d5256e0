"""A fake MH-Z19B on a pseudo-terminal (hardware.md §15.7) and its simulator.

It answers only well-formed 9-byte requests (``FF 01 …`` with a correct checksum; a bad one is
ignored, as the common assumption goes), 0x86 with ``FF 86 HH LL TT SS U1 U2 CK``; 0x79 (ABC),
0x99 (range), 0x87/0x88 (calibration) change its state without a reply. During the preheat
(``preheat_s`` after it was made) it answers a fixed 500 ppm. Faults: ``corrupt_next`` (a bad
checksum), ``truncate_next`` (the first N bytes only), ``garbage_before_next`` (bytes before the
reply), ``stuck_ppm``, and those of `FakeSerialChip` (``silent``, ``split_next``, `inject`,
`unplug`).

The checksum is written out again here rather than imported, so the tests compare two
implementations; the command bytes come from the driver module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import mhz19 as chip
from .serial import FakeSerialChip

if TYPE_CHECKING:
    from ..simulation import SimulatedWorld

MHZ19_FRAME_LEN = 9
MHZ19_PREHEAT_S = 180.0        #: manual: 3 min preheat
MHZ19_PREHEAT_PPM = 500        #: what the fake answers while preheating (not usable)
MHZ19_TEMPERATURE_OFFSET = 40  #: TT = °C + 40
MHZ19_STATUS = 0x40            #: an example SS value (hardware.md §15.6)
MHZ19_FACTORY_RANGE = 5000


def mhz19_checksum(frame: bytes) -> int:
    """0xFF − (sum of bytes 1..7 & 0xFF) + 1, as the manual writes it (mod 256)."""
    total = 0
    for byte in frame[1:8]:
        total = (total + byte) & 0xFF
    return (0xFF - total + 1) & 0xFF


class FakeMHZ19(FakeSerialChip):
    """MH-Z19B on the wire. ``source()`` gives ppm (or the attribute ``ppm``); ``commands`` lists
    every well-formed command byte received, in order (for "written once" tests)."""

    name = "mhz19"

    def __init__(self, *, ppm: float = 600.0, source: Callable[[], float] | None = None,
                 preheat_s: float = 0.0, temperature_c: float = 25.0, **kwargs: Any) -> None:
        self.ppm = ppm
        self.source = source
        self.temperature_c = temperature_c
        self.abc = True                       #: ABC is on at the factory
        self.range_ppm = MHZ19_FACTORY_RANGE
        self.commands: list[int] = []
        self.corrupt_next = False
        self.truncate_next: int | None = None
        self.garbage_before_next = b""
        self.stuck_ppm: int | None = None
        self._request = bytearray()
        self.preheat_s = preheat_s
        super().__init__(**kwargs)
        self.powered_at = self.clock()

    def receive(self, byte: int) -> None:
        """Collect 9-byte requests, resynchronising on 0xFF."""
        if not self._request and byte != chip.START_BYTE:
            return
        self._request.append(byte)
        if len(self._request) < MHZ19_FRAME_LEN:
            return
        request, self._request = bytes(self._request), bytearray()
        if request[1] != chip.SENSOR_ADDRESS or request[8] != mhz19_checksum(request):
            return  # ignored, as the manual leaves it open
        self.commands.append(request[2])
        self.handle(request)

    def handle(self, request: bytes) -> None:
        cmd = request[2]
        if cmd == chip.CMD_READ_CO2:
            self.reply(self.current_ppm())
        elif cmd == chip.CMD_ABC:
            self.abc = request[3] == chip.ABC_ON
        elif cmd == chip.CMD_RANGE:
            self.range_ppm = (request[6] << 8) | request[7]
        # 0x87 zero and 0x88 span: accepted, no reply, nothing to model here

    def current_ppm(self) -> int:
        if self.stuck_ppm is not None:
            return self.stuck_ppm
        if self.clock() - self.powered_at < self.preheat_s:
            return MHZ19_PREHEAT_PPM
        value = self.source() if self.source is not None else self.ppm
        return max(0, min(self.range_ppm, round(value)))

    def reply(self, ppm: int) -> None:
        """``FF 86 HH LL TT SS U1 U2 CK``, with the faults asked for."""
        frame = bytearray([0xFF, chip.CMD_READ_CO2, ppm >> 8, ppm & 0xFF,
                           round(self.temperature_c) + MHZ19_TEMPERATURE_OFFSET, MHZ19_STATUS, 0, 0, 0])
        frame[8] = mhz19_checksum(bytes(frame))
        if self.corrupt_next:
            self.corrupt_next = False
            frame[8] ^= 0x5A
        if self.garbage_before_next:
            self.inject(self.garbage_before_next)
            self.garbage_before_next = b""
        data = bytes(frame)
        if self.truncate_next is not None:
            data, self.truncate_next = data[:self.truncate_next], None
        self.send(data)


def simulate(world: SimulatedWorld, cls: type[chip.MHZ19], options: dict[str, Any]) -> chip.MHZ19:
    """An MH-Z19 driver on its own fake chip behind a pseudo-terminal, reading the world's CO₂
    (``environment.co2()``, the daily curve the other CO₂ sensors read too);
    the fake's thread stops when the driver closes (and with the world, at the latest)."""
    env = world.environment
    fake = FakeMHZ19(source=env.co2, clock=world.clock.monotonic)
    world.shared(("serial-chip", fake.device), lambda: fake)  # found by its pty's name; closed with the world
    try:
        return cls(fake.device, release=fake.close, **options)
    except BaseException:
        fake.close()
        raise
