"""A command-level fake SHT3x (datasheet SHT3x-DIS v5) and its simulator.

`FakeSHT3x` sits on a `pibridge.drivers.fakes.i2c.FakeSMBus`; `simulate` builds an `SHT3x`
driver on the simulated world's I2C bus, fed by the world's air temperature and humidity.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import sht3x as chip
from .i2c import FakeI2CDevice, nack_error
from .sensirion import clamp_ticks, pack_words

if TYPE_CHECKING:
    from ..simulation import SimulatedWorld

#: datasheet *typical* durations (the driver waits the maximum)
SINGLE_SHOT_TYPICAL_S = {chip.CMD_SINGLE_SHOT["high"]: 0.0125, chip.CMD_SINGLE_SHOT["medium"]: 0.0045,
                         chip.CMD_SINGLE_SHOT["low"]: 0.0025}
STRETCHED = {stretch: chip.CMD_SINGLE_SHOT[rep] for rep, stretch in chip.CMD_SINGLE_SHOT_STRETCH.items()}
PERIODIC_PERIOD_S = {cmd: 1.0 / mps for mps, row in chip.CMD_PERIODIC.items() for cmd in row.values()}
PERIODIC_PERIOD_S[chip.CMD_ART] = 0.25
EMBEDDED_273A = 0x273A       #: Sensirion's generated driver's 10 mps / low code (see the driver)
BREAK_TYPICAL_S = 0.0005
SOFT_RESET_TYPICAL_S = 0.001
STATUS_CLEARABLE = (chip.STATUS_ALERT_PENDING | chip.STATUS_RH_ALERT | chip.STATUS_T_ALERT
                    | chip.STATUS_RESET_DETECTED)
DEFAULT_SERIAL = 0x0C0FFEE5


class FakeSHT3x(FakeI2CDevice):
    """SHT3x on the wire: 16-bit commands, a single-shot / periodic state machine, a status
    register, results as a plain read that is NACKed while nothing is ready.

    * single shot 0x24xx: the frame after the typical time (reads NACKed until then); 0x2Cxx
      (clock stretching): the frame at once (the stretch is the wait; nothing stretches here).
    * periodic 0x20xx..0x27xx and ART: a new result every period; fetch 0xE000 then read; a
      fetch with no new data NACKs the read; a fetch clears the data. Single-shot commands and
      soft reset are not processed in periodic mode (status bit 1), break 0x3093 stops it.
    * status 0xF32D (word + CRC), clear 0x3041, heater 0x306D / 0x3066 (status bit 13),
      serial 0x3682 / 0x3780, soft reset 0x30A2 (deaf ~1 ms, status back to power-on 0x8010).
    * unknown codes and 1-byte writes are not executed and set status bit 1 (``reject_273a``:
      whether Sensirion's 0x273A counts as unknown; True by default, as the datasheet lists 0x272A).

    Inputs: ``source()`` -> (°C, %RH), or the fixed ``celsius``/``humidity``. Faults (opt-in):
    ``nack``/`fail_next`; ``corrupt_crc`` (next N frames); ``fill_ffff`` (reads return FF bytes,
    as a floating SDA line); ``raw_ticks``; ``stuck_busy``; `power_glitch`; detach (gone).
    """

    def __init__(self, *, celsius: float = 21.0, humidity: float = 50.0,
                 source: Callable[[], tuple[float, float]] | None = None,
                 clock: Callable[[], float] = time.monotonic, serial: int = DEFAULT_SERIAL) -> None:
        super().__init__()
        self.celsius, self.humidity = celsius, humidity
        self.source = source
        self.clock = clock
        self.serial = serial
        self.status = chip.STATUS_POWER_ON
        self.reject_273a = True
        self.corrupt_crc = 0
        self.fill_ffff = False
        self.raw_ticks: tuple[int, int] | None = None
        self.stuck_busy = False
        self.commands: list[int] = []
        self.periodic_period_s: float | None = None
        self._periodic_since = 0.0
        self._fetched_up_to = 0
        self._ready_at: float | None = None
        self._result = b""
        self._deaf_until = -math.inf

    def power_glitch(self) -> None:
        """Supply dip: power-on state (idle, status 0x8010, heater off), deaf for ~1 ms."""
        self.status = chip.STATUS_POWER_ON
        self.periodic_period_s = None
        self._ready_at = None
        self._result = b""
        self._deaf_until = self.clock() + SOFT_RESET_TYPICAL_S

    def _frame(self) -> bytes:
        if self.raw_ticks is not None:
            s_t, s_rh = self.raw_ticks
        else:
            celsius, humidity = self.source() if self.source is not None else (self.celsius, self.humidity)
            s_t = clamp_ticks((celsius + 45.0) * 65535 / 175.0)
            s_rh = clamp_ticks(humidity * 65535 / 100.0)
        frame = bytearray(pack_words(s_t, s_rh))
        if self.corrupt_crc > 0:
            self.corrupt_crc -= 1
            frame[5] ^= 0x01
        return bytes(frame)

    def _reply(self, data: bytes, after_s: float = 0.0) -> None:
        self._result = data
        self._ready_at = self.clock() + after_s

    def _refuse(self) -> None:
        self.status |= chip.STATUS_COMMAND_FAILED

    def i2c_write(self, data: bytes) -> None:
        now = self.clock()
        if now < self._deaf_until:
            raise nack_error()
        if len(data) < 2:
            self._refuse()   # an incomplete command is not executed
            return
        command = (data[0] << 8) | data[1]
        self.commands.append(command)
        periodic = self.periodic_period_s is not None
        if command == chip.CMD_BREAK:
            self.periodic_period_s = None
            self._deaf_until = now + BREAK_TYPICAL_S
        elif command == chip.CMD_FETCH and periodic:
            assert self.periodic_period_s is not None
            done = math.floor((now - self._periodic_since) / self.periodic_period_s)
            if done > self._fetched_up_to:
                self._fetched_up_to = done
                self._reply(self._frame())
            else:
                self._ready_at = None   # no new data: the read header will be NACKed
        elif command in (chip.CMD_READ_STATUS,):
            self._reply(pack_words(self.status))
        elif command == chip.CMD_CLEAR_STATUS:
            self.status &= ~STATUS_CLEARABLE & 0xFFFF
        elif command == chip.CMD_HEATER_ON:
            self.status |= chip.STATUS_HEATER_ON
        elif command == chip.CMD_HEATER_OFF:
            self.status &= ~chip.STATUS_HEATER_ON & 0xFFFF
        elif command in (chip.CMD_SERIAL, 0x3780):
            self._reply(pack_words(self.serial >> 16, self.serial & 0xFFFF), 0.0005)
        elif periodic:
            self._refuse()   # single shot, soft reset, another periodic command: not processed
        elif command in SINGLE_SHOT_TYPICAL_S:
            self._reply(self._frame(), SINGLE_SHOT_TYPICAL_S[command])
        elif command in STRETCHED:
            self._reply(self._frame())
        elif command == chip.CMD_SOFT_RESET:
            self.power_glitch()
        elif command in PERIODIC_PERIOD_S or (command == EMBEDDED_273A and not self.reject_273a):
            self.periodic_period_s = PERIODIC_PERIOD_S.get(command, 0.1)
            self._periodic_since, self._fetched_up_to = now, 0
            self._ready_at = None
        else:
            self._refuse()

    def i2c_read(self, length: int) -> bytes:
        now = self.clock()
        if self.stuck_busy or now < self._deaf_until or self._ready_at is None or now < self._ready_at:
            raise nack_error()   # measuring or nothing pending: the read header is not acknowledged
        data = b"\xff" * length if self.fill_ffff else self._result
        self._ready_at = None    # a result is read once
        return (data + b"\xff" * length)[:length]


def simulate(world: SimulatedWorld, cls: type[chip.SHT3x], options: dict[str, Any]) -> chip.SHT3x:
    """An SHT3x driver on the world's fake I2C bus, reading the environment's air."""
    config = cls.check_options(options)
    env = world.environment
    bus = world.i2c_bus(config["i2c_bus"])
    world.attach_i2c(bus, config["address"], lambda: FakeSHT3x(
        source=lambda: (env.air_temperature(), env.relative_humidity()), clock=world.clock.monotonic))
    return cls(bus=bus, **options)
