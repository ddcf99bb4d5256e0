"""A command-level fake SHT4x (datasheet v6) and its simulator.

`FakeSHT4x` sits on a `pibridge.drivers.fakes.i2c.FakeSMBus`; `simulate` builds an `SHT4x`
driver on the simulated world's I2C bus, fed by the world's air temperature and humidity.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import sht4x as chip
from .i2c import FakeI2CDevice, nack_error
from .sensirion import clamp_ticks, pack_words

if TYPE_CHECKING:
    from ..simulation import SimulatedWorld

#: datasheet *typical* measurement durations (the driver waits the maximum)
TYPICAL_S = {chip.CMD_MEASURE["high"]: 0.0069, chip.CMD_MEASURE["medium"]: 0.0037,
             chip.CMD_MEASURE["low"]: 0.0013}
HEATERS = {command: (power, duration) for command, power, duration in chip.HEATER_SETTINGS.values()}
SOFT_RESET_TYPICAL_S = 0.001
SERIAL_TYPICAL_S = 0.0005
#: how much a 1 s pulse warms the sensing element, °C (a 0.1 s pulse: `SHORT_PULSE_FRACTION` of it)
HEATER_RISE_C = {200: 45.0, 110: 25.0, 20: 5.0}
SHORT_PULSE_FRACTION = 0.3
THERMAL_TAU_S = 2.0          #: the element cools with this time constant after a pulse
DEFAULT_SERIAL = 0x1234ABCD


class FakeSHT4x(FakeI2CDevice):
    """SHT4x on the wire: one-byte commands, results as a plain read that is NACKed until the
    command's (typical) duration has passed.

    * measure commands 0xFD/0xF6/0xE0: a 6-byte frame (T, RH words with CRCs) after the typical
      time; heater commands (0x39 ...): the same after the pulse, measured hot.
    * 0x89: the serial number (two words with CRCs); 0x94: soft reset, deaf (NACK) for ~1 ms.
    * an unknown command byte is NACKed (an assumption: the datasheet lists no behaviour), and so is
      a read with nothing pending. A second read of the same result: NACK, or the same frame
      again with ``reread = "repeat"`` (the datasheet does not say which).

    Inputs: ``source()`` -> (°C, %RH), or the fixed ``celsius``/``humidity``. Faults (opt-in):
    ``nack``/`fail_next`; ``corrupt_crc`` (the next N frames carry a flipped CRC byte);
    ``raw_ticks`` = (S_T, S_RH) sent instead of the source; ``stuck_busy`` (every read NACKed, as a
    chip that never finishes); `power_glitch` (the chip restarts: anything pending is lost);
    detaching it from the bus (gone).
    """

    def __init__(self, *, celsius: float = 21.0, humidity: float = 50.0,
                 source: Callable[[], tuple[float, float]] | None = None,
                 clock: Callable[[], float] = time.monotonic, serial: int = DEFAULT_SERIAL) -> None:
        super().__init__()
        self.celsius, self.humidity = celsius, humidity
        self.source = source
        self.clock = clock
        self.serial = serial
        self.reread = "nack"
        self.corrupt_crc = 0
        self.raw_ticks: tuple[int, int] | None = None
        self.stuck_busy = False
        self.commands: list[int] = []
        self.pulses: list[tuple[float, int, float]] = []   # (end time, mW, s)
        self._ready_at: float | None = None
        self._result = b""
        self._deaf_until = -math.inf

    def power_glitch(self) -> None:
        """Supply dip: the chip restarts (idle, nothing pending, deaf for its power-up time)."""
        self._ready_at = None
        self._result = b""
        self._deaf_until = self.clock() + SOFT_RESET_TYPICAL_S

    # -- physics -------------------------------------------------------------------------------
    def element_rise_c(self, now: float) -> float:
        """How much warmer than the air the sensing element is now (heater pulses decaying)."""
        rise = 0.0
        for end, power, duration in self.pulses:
            full = HEATER_RISE_C[power] * (1.0 if duration >= 1.0 else SHORT_PULSE_FRACTION)
            if now >= end:
                rise += full * math.exp(-(now - end) / THERMAL_TAU_S)
            else:
                rise += full
        return rise

    def _frame(self, rise_c: float = 0.0) -> bytes:
        if self.raw_ticks is not None:
            s_t, s_rh = self.raw_ticks
        else:
            celsius, humidity = self.source() if self.source is not None else (self.celsius, self.humidity)
            if rise_c:  # warmer element: the same water vapour is a lower relative humidity
                humidity *= math.exp(-0.06 * rise_c)
                celsius += rise_c
            s_t = clamp_ticks((celsius + 45.0) * 65535 / 175.0)
            s_rh = clamp_ticks((humidity + 6.0) * 65535 / 125.0)
        frame = bytearray(pack_words(s_t, s_rh))
        if self.corrupt_crc > 0:
            self.corrupt_crc -= 1
            frame[2] ^= 0xFF
        return bytes(frame)

    # -- the wire ------------------------------------------------------------------------------
    def i2c_write(self, data: bytes) -> None:
        now = self.clock()
        if now < self._deaf_until or not data:
            raise nack_error()
        command = data[0]
        self.commands.append(command)
        if command in TYPICAL_S:
            self._result = self._frame(self.element_rise_c(now))
            self._ready_at = now + TYPICAL_S[command]
        elif command in HEATERS:
            power, duration = HEATERS[command]
            self.pulses.append((now + duration, power, duration))
            self._result = self._frame(self.element_rise_c(now + duration))
            self._ready_at = now + duration + TYPICAL_S[chip.CMD_MEASURE["high"]]
        elif command == chip.CMD_SERIAL:
            self._result = pack_words(self.serial >> 16, self.serial & 0xFFFF)
            self._ready_at = now + SERIAL_TYPICAL_S
        elif command == chip.CMD_SOFT_RESET:
            self._ready_at = None
            self._result = b""
            self._deaf_until = now + SOFT_RESET_TYPICAL_S
        else:
            raise nack_error()

    def i2c_read(self, length: int) -> bytes:
        now = self.clock()
        if self.stuck_busy or now < self._deaf_until or self._ready_at is None or now < self._ready_at:
            raise nack_error()   # busy or nothing pending: the read header is not acknowledged
        data = self._result
        if self.reread != "repeat":
            self._ready_at = None
        return (data + b"\xff" * length)[:length]


def simulate(world: SimulatedWorld, cls: type[chip.SHT4x], options: dict[str, Any]) -> chip.SHT4x:
    """An SHT4x driver on the world's fake I2C bus, reading the environment's air."""
    config = cls.check_options(options)
    env = world.environment
    bus = world.i2c_bus(config["i2c_bus"])
    world.attach_i2c(bus, config["address"], lambda: FakeSHT4x(
        source=lambda: (env.air_temperature(), env.relative_humidity()), clock=world.clock.monotonic))
    return cls(bus=bus, clock=world.clock.monotonic, **options)
